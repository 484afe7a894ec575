"""``minitrans.nn``: Module, Parameter, layers, attention and the Transformer."""
from . import functional, init
from .attention import KVCache, MultiheadAttention
from .layers import (GELU, Dropout, Embedding, Identity, LayerNorm, Linear, ModuleList, ReLU, Sequential, Tanh)
from .activation import LogSoftmax, Sigmoid, SiLU, Softmax
from .containers import ModuleDict
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Module, Parameter
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell

from .rotary import RotaryEmbedding
from .transformer import (FeedForward, PositionalEncoding, Transformer, TransformerDecoder, TransformerDecoderLayer,
                          TransformerEncoder, TransformerEncoderLayer)
from . import utils

__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout", "ReLU", "GELU", "Tanh", "Identity",
           "Sequential", "ModuleList", "MultiheadAttention", "KVCache", "RotaryEmbedding", "PositionalEncoding", "FeedForward",
           "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder",
           "Transformer", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCEWithLogitsLoss", "RNNBase", "RNN", "LSTM",
           "GRU", "RNNCell", "LSTMCell", "GRUCell", "Sigmoid", "SiLU", "Softmax", "LogSoftmax", "ModuleDict",
           "functional", "init",
           "utils"]
