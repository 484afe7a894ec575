"""Ready models built from ``minitrans.nn``: a decoder-only language model and an encoder–decoder translator.

    from minitrans.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
    lm = GPT(GPTConfig(vocab_size=64, block_size=128))
    logits = lm(idx)                      # idx (B, T) int64 -> (B, T, vocab)
    model = from_checkpoint("runs/reverse/checkpoint.npz")   # class + config + weights from the file
"""
from .checkpoint import check_config, checkpoint_task, describe, from_checkpoint, register, save_model
from .gpt import GPT, GPTConfig
from .seq2seq import Seq2Seq, Seq2SeqConfig

__all__ = ["GPT", "GPTConfig", "Seq2Seq", "Seq2SeqConfig", "from_checkpoint", "checkpoint_task", "check_config",
           "describe", "register", "save_model"]
