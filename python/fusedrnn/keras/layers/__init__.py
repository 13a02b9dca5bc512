"""Keras' layers, with Keras' arguments, over the same pieces and kernels as the rest of the
trainer.

    LSTM(128, input_shape=(T, F)), LSTM(units=64, return_sequences=True), GRU(32),
    SimpleRNN(16, activation='relu'), Bidirectional(LSTM(32)), Dense(10, activation='softmax'),
    Dropout(0.5), Embedding(vocab, 64, mask_zero=True), Masking(0.0),
    TimeDistributed(Dense(1)), Input(shape=(T, F))

Sizes are inferred when the layer first sees data (or from ``input_shape``), as in Keras.
``get_weights`` returns Keras' layout (Dense kernel (in, out); recurrent kernel (I, G*H),
recurrent_kernel (H, G*H), bias as Keras keeps it), so ``set_weights`` takes the list a Keras
layer's ``get_weights()`` gave; internally the weights are torch's (docs/conventions.md) and
keras_import converts.  An LSTM or SimpleRNN has one bias, as in Keras (the kernels' second
bias stays zero and is not trained), so parameter counts equal Keras'.

Masks: Masking and Embedding(mask_zero=True) must be the model's first layer; the model turns
their mask into per-sequence lengths for the kernels (right- or left-padded sequences; a mask
with holes inside a sequence is refused).  Past a sequence's end, sequence outputs are zero.

What the kernels cannot do is refused when the layer is built: recurrent_activation other
than 'sigmoid', recurrent_dropout > 0, GRU(reset_after=False), activations other than
tanh/relu for LSTM/SimpleRNN and tanh for GRU, go_backwards with a mask, merge modes other
than 'concat', and initializers/regularizers/constraints other than Keras' defaults.
"""

from .. import pieces
from .core import Dense, Dropout, Embedding, Input, InputLayer, Masking
from .recurrent import GRU, LSTM, SimpleRNN
from .wrappers import Bidirectional, TimeDistributed

__all__ = ["Input", "InputLayer", "Dense", "Dropout", "Embedding", "Masking", "LSTM", "GRU",
           "SimpleRNN", "Bidirectional", "TimeDistributed"]

for _cls in (InputLayer, Dense, Dropout, Embedding, Masking, LSTM, GRU, SimpleRNN, Bidirectional,
             TimeDistributed):
    pieces.LAYER_CLASSES[_cls.file_class] = _cls  # how saved models name them
del _cls
