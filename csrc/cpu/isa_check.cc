// Compiled into every kernel variant (CMakeLists.txt: fusedrnn_isa_variant): a variant whose
// code-generation flags went missing (another compiler, a typo in its flag list) would
// otherwise build as plain baseline code and be dispatched to as if it were the fast one.
#if defined(FUSEDRNN_ISA_avx2) && !defined(__AVX2__)
#error "the avx2 kernel variant is compiled without AVX2 code generation (check its compiler flags)"
#endif
#if defined(FUSEDRNN_ISA_avx512) && \
    !(defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && defined(__AVX512VL__))
#error "the avx512 kernel variant is compiled without AVX-512 F/DQ/BW/VL code generation (check its compiler flags)"
#endif

namespace fusedrnn::cpu::FUSEDRNN_ISA {
// A translation unit must declare something; one name per variant.
extern const int kIsaCheck;
const int kIsaCheck = 0;
}  // namespace fusedrnn::cpu::FUSEDRNN_ISA
