"""Accumulating attention probabilities without ever holding a heads x N x N array.

The learned backbones recompute a layer's probabilities from its queries and keys (the layer's
own output is left to the model) and add them, averaged over batch and heads and weighted, into
one N x N fp32 buffer, a chunk of query rows at a time.
"""

from __future__ import annotations

import torch

# Working memory of one chunk of probabilities (all heads x rows x N, fp32).
DEFAULT_CHUNK_BYTES = 128 * 2**20


class AttentionCapture:
    """The accumulator shared by the capturing hooks of one model.

    While ``start`` has been called and ``finish`` has not, every :meth:`add` adds
    ``weight * mean over batch and heads of softmax(Q K^T * scale)`` to ``buffer`` (N x N fp32).
    """

    def __init__(self):
        self.chunk_bytes = DEFAULT_CHUNK_BYTES
        self.buffer: torch.Tensor | None = None
        self.calls: list[str] = []

    def start(self, tokens: int, device: torch.device, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.buffer = torch.zeros(tokens, tokens, dtype=torch.float32, device=device)
        self.calls = []

    def finish(self) -> torch.Tensor:
        buffer, self.buffer = self.buffer, None
        return buffer

    def add(self, name: str, weight: float, query: torch.Tensor, key: torch.Tensor,
            scale: float) -> None:
        """Accumulate the probabilities of ``query`` / ``key`` of shape (B, heads, N, d)."""
        batch, heads, tokens, dim = query.shape
        if self.buffer.shape[0] != tokens:
            raise RuntimeError(f"{name}: {tokens} tokens, expected {self.buffer.shape[0]}")
        maps = batch * heads
        query = query.reshape(maps, tokens, dim).float()
        key_t = key.reshape(maps, tokens, dim).float().transpose(1, 2)
        rows = min(tokens, max(1, self.chunk_bytes // (maps * tokens * 4)))
        # One work array for every chunk; all steps below write into it in place, so the
        # chunk is the only heads x rows x N array that ever exists.
        work = torch.empty(maps * rows * tokens, dtype=torch.float32, device=query.device)
        for start in range(0, tokens, rows):
            stop = min(start + rows, tokens)
            logits = work[: maps * (stop - start) * tokens].view(maps, stop - start, tokens)
            torch.bmm(query[:, start:stop], key_t, out=logits)
            logits.mul_(scale)
            logits.sub_(logits.amax(dim=-1, keepdim=True))
            logits.exp_()
            logits.div_(logits.sum(dim=-1, keepdim=True))
            for probabilities in logits:
                self.buffer[start:stop].add_(probabilities, alpha=weight / maps)
        self.calls.append(name)
