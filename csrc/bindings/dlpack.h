// The DLPack C ABI (https://dmlc.github.io/dlpack/latest/c_api.html), the part fusedrnn uses to
// exchange device arrays with other libraries: the tensor description, the managed tensors of
// the legacy ("dltensor") and versioned ("dltensor_versioned") capsules, and the constants
// fusedrnn checks.  Layouts follow the specification field for field; they are declared here
// so that the build needs no dlpack.h.
#pragma once

#include <cstdint>

namespace fusedrnn::bind::dlpack {

// Device types (DLDeviceType).
constexpr int32_t kCPU = 1;
constexpr int32_t kCUDA = 2;
constexpr int32_t kCUDAHost = 3;
constexpr int32_t kCUDAManaged = 13;

// Type codes (DLDataTypeCode).
constexpr uint8_t kInt = 0;
constexpr uint8_t kUInt = 1;
constexpr uint8_t kFloat = 2;
constexpr uint8_t kOpaqueHandle = 3;
constexpr uint8_t kBfloat = 4;
constexpr uint8_t kComplex = 5;
constexpr uint8_t kBool = 6;

// DLManagedTensorVersioned::flags bits.
constexpr uint64_t kFlagReadOnly = 1ull << 0;
constexpr uint64_t kFlagIsCopied = 1ull << 1;

// The version fusedrnn writes into the versioned tensors it exports and the newest major
// version it reads.
constexpr uint32_t kMajorVersion = 1;
constexpr uint32_t kMinorVersion = 0;

// Capsule names: a capsule is renamed to the "used_" name by the consumer that takes it over.
inline constexpr const char* kCapsule = "dltensor";
inline constexpr const char* kCapsuleUsed = "used_dltensor";
inline constexpr const char* kCapsuleVersioned = "dltensor_versioned";
inline constexpr const char* kCapsuleVersionedUsed = "used_dltensor_versioned";

struct Version {
  uint32_t major;
  uint32_t minor;
};

struct Device {
  int32_t device_type;
  int32_t device_id;
};

struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct Tensor {
  void* data;          // with byte_offset added, the first element
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;      // ndim entries
  int64_t* strides;    // ndim entries in elements (not bytes), or null for C-contiguous
  uint64_t byte_offset;
};

// The legacy managed tensor ("dltensor" capsules).
struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

// The versioned managed tensor ("dltensor_versioned" capsules, DLPack 1.0 and later).
struct ManagedTensorVersioned {
  Version version;
  void* manager_ctx;
  void (*deleter)(ManagedTensorVersioned* self);
  uint64_t flags;
  Tensor dl_tensor;
};

}  // namespace fusedrnn::bind::dlpack
