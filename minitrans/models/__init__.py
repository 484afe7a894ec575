"""Ready models built from ``minitrans.nn``: a decoder-only language model and an encoder–decoder translator.

    from minitrans.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
    lm = GPT(GPTConfig(vocab_size=64, block_size=128))
    logits = lm(idx)                      # idx (B, T) int64 -> (B, T, vocab)
    out = lm.generate(idx, 20, temperature=0.8, top_k=10)      # (B, T + 20), key/value cache on
    ys = translator.generate(src, 40, beam_size=4, eos_token_id=2) # (B, 1 + ≤40) from BOS
    model = from_checkpoint("runs/reverse/checkpoint.npz")   # class + config + weights from the file
"""
from .checkpoint import check_config, checkpoint_task, describe, from_checkpoint, register, save_model
from .generation import GenerationCache
from .gpt import GPT, GPTConfig
from .seq2seq import Seq2Seq, Seq2SeqConfig

__all__ = ["GPT", "GPTConfig", "Seq2Seq", "Seq2SeqConfig", "GenerationCache", "from_checkpoint", "checkpoint_task",
           "check_config",
           "describe", "register", "save_model"]
