"""``minitrans.nn``: Module, Parameter, layers, attention and the Transformer."""
from . import functional, init
from .attention import KVCache, MultiheadAttention
from .layers import (GELU, Dropout, Embedding, Identity, LayerNorm, Linear, ModuleList, ReLU, Sequential, Tanh)
from .module import Module, Parameter
from .rotary import RotaryEmbedding
from .transformer import (FeedForward, PositionalEncoding, Transformer, TransformerDecoder, TransformerDecoderLayer,
                          TransformerEncoder, TransformerEncoderLayer)
from . import utils

__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout", "ReLU", "GELU", "Tanh", "Identity",
           "Sequential", "ModuleList", "MultiheadAttention", "KVCache", "RotaryEmbedding", "PositionalEncoding", "FeedForward",
           "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder",
           "Transformer", "functional", "init", "utils"]
