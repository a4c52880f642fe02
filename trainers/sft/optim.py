"""The SFT optimizer: AdamW, or Muon on the hidden weight matrices with AdamW on the rest."""

from __future__ import annotations

import math
from typing import Any

import torch

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)  # torch.optim.Muon's (Keller Jordan's quintic iteration)


class BatchedMuon(torch.optim.Optimizer):
    """``torch.optim.Muon``'s update (Nesterov momentum, then Newton-Schulz orthogonalisation in
    bf16, decoupled weight decay, ``adjust_lr_fn="match_rms_adamw"``), with the matrices of one
    shape orthogonalised together in batched matmuls: the same arithmetic (a test checks it against
    ``torch.optim.Muon``) in a few larger calls instead of a chain per matrix, which is faster
    for a small model's many small matrices."""

    def __init__(
        self,
        params: Any,
        lr: float,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        ns_steps: int = 5,
        eps: float = 1e-7,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "ns_steps": ns_steps, "eps": eps}
        )
        for group in self.param_groups:
            if any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon trains 2-D weight matrices only")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102 (torch's)
        if closure is not None:
            raise ValueError("BatchedMuon.step takes no closure")
        for group in self.param_groups:
            shapes: dict[torch.Size, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    shapes.setdefault(p.shape, []).append(p)
            for shape, params in shapes.items():
                grads = [p.grad for p in params]
                bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
                torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
                updates = torch.stack(grads).lerp_(torch.stack(bufs), group["momentum"])  # Nesterov
                updates = newton_schulz(updates, group["ns_steps"], group["eps"])
                step = group["lr"] * 0.2 * math.sqrt(max(shape))  # match_rms_adamw
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
                torch._foreach_add_(params, list(updates.to(params[0].dtype).unbind(0)), alpha=-step)


def newton_schulz(matrices: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise each matrix of a (batch, rows, cols) stack, in bf16
    (``torch.optim._muon._zeropower_via_newtonschulz``, batched)."""
    a, b, c = NS_COEFFICIENTS
    x = matrices.bfloat16()
    tall = x.size(1) > x.size(2)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


class MuonAdamW(torch.optim.Optimizer):
    """Muon (``BatchedMuon``: momentum orthogonalised by Newton-Schulz) on the 2-D weight
    matrices inside the network, AdamW on everything else (embeddings and the output layer,
    norm gains, biases), as in Keller Jordan's Muon and Moonshot's "Muon is scalable".

    Both share one learning rate and schedule: Muon's update is scaled to AdamW's RMS
    (``adjust_lr_fn="match_rms_adamw"``), so an AdamW learning rate carries over.
    ``param_groups`` are the two optimizers' own groups: a learning-rate scheduler sets both.
    """

    def __init__(self, named_params: list[tuple[str, torch.Tensor]], lr: float, weight_decay: float) -> None:
        hidden = [p.ndim == 2 and not _is_embedding(n) for n, p in named_params]
        matrices = [p for (_, p), h in zip(named_params, hidden) if h]
        others = [p for (_, p), h in zip(named_params, hidden) if not h]
        if not matrices:
            raise ValueError("sft.optimizer=muon: the model has no hidden weight matrices to train")
        self.muon = BatchedMuon(matrices, lr=lr, weight_decay=weight_decay)
        self.adamw = torch.optim.AdamW(others, lr=lr, weight_decay=weight_decay) if others else None
        super().__init__([p for n, p in named_params], {"lr": lr})
        self.param_groups = self.muon.param_groups + (self.adamw.param_groups if self.adamw else [])

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102 (torch's)
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        self.muon.step()
        if self.adamw is not None:
            self.adamw.step()

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict() if self.adamw else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self.muon.load_state_dict(state_dict["muon"])
        if self.adamw is not None:
            self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + (self.adamw.param_groups if self.adamw else [])


def _is_embedding(name: str) -> bool:
    return "embed" in name or "lm_head" in name or "wte" in name


def make_optimizer(model: torch.nn.Module, kind: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer ``sft.optimizer`` names over ``model``'s trainable parameters."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if kind == "adamw":
        return torch.optim.AdamW([p for _, p in named], lr=lr, weight_decay=weight_decay)
    if kind == "muon":
        return MuonAdamW(named, lr, weight_decay)
    raise ValueError(f"sft.optimizer: unknown optimizer {kind!r} (adamw or muon)")
