"""A small PyTorch program: character language models (an LSTM and a Transformer) trained on a
few sentences, checkpointed as whole modules, then sampled from. It is written for PyTorch;
the test runs it unchanged under minitrans with only the three import lines below swapped.

Idioms on purpose: a tril causal mask (log of a lower triangle: log(0) = -inf), item assignment
into the positional table, a 0-d tensor from randint as a slice bound, narrow, a loss module,
manual SGD through p.data.add_, clip_grad_norm_, torch.save(model, f) / torch.load(f), and
sampling with multinomial.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TEXT = ("the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat. "
        "the log was by the mat and the cat ran to the dog. ") * 2


class Corpus:
    def __init__(self, text):
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.ids = torch.tensor([self.stoi[c] for c in text], dtype=torch.long)


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous()           # (time, batch)


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=256):
        super().__init__()
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(1))       # (max_len, 1, d_model)

    def forward(self, x):
        return x + self.pe[:x.size(0), :]


class TransformerLM(nn.Module):
    def __init__(self, ntoken, ninp, nhead, nhid, nlayers):
        super().__init__()
        self.pos_encoder = PositionalEncoding(ninp)
        layer = nn.TransformerEncoderLayer(ninp, nhead, nhid, dropout=0.0)
        self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.decoder = nn.Linear(ninp, ntoken)
        self.ninp = ninp
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    @staticmethod
    def causal_mask(sz):
        return torch.log(torch.tril(torch.ones(sz, sz)))   # 0 on and below the diagonal, -inf above

    def forward(self, src):
        mask = self.causal_mask(len(src))
        x = self.pos_encoder(self.encoder(src) * math.sqrt(self.ninp))
        return F.log_softmax(self.decoder(self.transformer_encoder(x, mask)), dim=-1)


class LSTMLM(nn.Module):
    def __init__(self, ntoken, ninp, nhid, nlayers):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nlayers, self.nhid = nlayers, nhid

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))

    def forward(self, src, hidden):
        output, hidden = self.rnn(self.encoder(src), hidden)
        return F.log_softmax(self.decoder(output), dim=-1), hidden


def repackage_hidden(h):
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def build(seed=0):
    torch.manual_seed(seed)
    corpus = Corpus(TEXT)
    n = len(corpus.chars)
    return corpus, {"lstm": LSTMLM(n, 16, 24, 2), "transformer": TransformerLM(n, 16, 2, 32, 2)}


def step_losses(model, data, criterion, bptt, starts, lr=0.5):
    """One manual-SGD step per start offset; the training loss of each step."""
    model.train()
    losses = []
    hidden = model.init_hidden(data.size(1)) if isinstance(model, LSTMLM) else None
    for i in starts:
        x, y = get_batch(data, i, bptt)
        model.zero_grad()
        if hidden is not None:
            hidden = repackage_hidden(hidden)
            out, hidden = model(x, hidden)
        else:
            out = model(x)
        loss = criterion(out.view(-1, out.size(-1)), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
    return losses


def evaluate(model, data, criterion, bptt):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        hidden = model.init_hidden(data.size(1)) if isinstance(model, LSTMLM) else None
        for i in range(0, data.size(0) - 1, bptt):
            x, y = get_batch(data, i, bptt)
            out = model(x, hidden)[0] if hidden is not None else model(x)
            total += len(x) * criterion(out.view(-1, out.size(-1)), y).item()
            count += len(x)
    return total / count


def sample(model, corpus, n, temperature=1.0):
    model.eval()
    idx = torch.zeros(1, 1, dtype=torch.long)
    idx[0, 0] = corpus.stoi["t"]                          # item assignment into an index tensor
    hidden = model.init_hidden(1) if isinstance(model, LSTMLM) else None
    chars = ["t"]
    with torch.no_grad():
        for _ in range(n):
            if hidden is not None:
                out, hidden = model(idx[-1:], hidden)
            else:
                out = model(idx)
            weights = out[-1].squeeze().div(temperature).exp()
            nxt = torch.multinomial(weights, 1)[0]
            chars.append(corpus.chars[nxt])              # a 0-d tensor as a list index
            idx = torch.cat([idx, nxt.view(1, 1)], 0)
    return "".join(chars)


def train(corpus, models, steps=4, bptt=12, seed=0, starts=None):
    """Train each model for ``steps`` steps at random offsets (or at ``starts``), checkpoint it
    whole, reload it and evaluate it."""
    import io

    data = batchify(corpus.ids, 4)
    criterion = nn.NLLLoss()
    if starts is None:
        torch.manual_seed(seed)
        starts = [torch.randint(0, data.size(0) - bptt - 1, (1,))[0] for _ in range(steps)]   # 0-d tensors
    result = {}
    for name, model in models.items():
        losses = step_losses(model, data, criterion, bptt, starts)
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        with torch.serialization.safe_globals([F.relu] + [type(m) for m in model.modules()]):
            model = torch.load(buf)
        result[name] = {"train": losses, "eval": evaluate(model, data, criterion, bptt),
                        "sample": sample(model, corpus, 20)}
    return result


if __name__ == "__main__":
    c, ms = build()
    for k, v in train(c, ms, steps=200).items():
        print(k, v["train"][-1], v["eval"], repr(v["sample"]))
