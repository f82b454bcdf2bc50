"""Several users' ``GRUMaskNet`` students as one network: every weight gets a leading user axis ``[U, ...]``.

``torch.func.vmap`` cannot batch ``nn.GRU`` (torch 2.13: no batching rule for ``aten::gru.input``), so the GRU here is
written out: the input projections of all frames in one batched matmul, then a loop over frames of batched matmuls
with the recurrent weights. It is ``nn.GRU``'s math, in its gate order (reset, update, new), with its bias layout and
its CPU cell's operation order (``h' = (h - n) * z + n``), and it reads the same ``state_dict`` names; its numbers
equal ``nn.GRU``'s up to float summation order. User ``u``'s outputs depend on user ``u``'s weights and crops only, so
the gradient of the sum of the users' losses is, for each user, the gradient of its own loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedpse.models.gru import GRUMaskNet


def stack_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot be stacked here (None: it can): only unidirectional ``GRUMaskNet``s are written out."""
    if type(model) is not GRUMaskNet:
        return f"the student is a {type(model).__name__}, not a GRUMaskNet"
    if model.bidirectional:
        return "the student's GRU is bidirectional"
    return None


def stack_weights(models: list[nn.Module], names: list[str] | None = None) -> dict[str, Tensor]:
    """``{name: [U, ...]}``: the users' parameters (all, or ``names``) stacked, detached from the models."""
    named = [dict(m.named_parameters()) for m in models]
    return {n: torch.stack([p[n].detach() for p in named]) for n in (names or list(named[0]))}


def gru_frames(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU layer for U users: ``x`` [U, B, S, I] (batch first, S frames), weights [U, 3H, I], [U, 3H, H],
    biases [U, 3H] (``nn.GRU``'s ``weight_ih_l*`` ... of each user) -> outputs [U, B, S, H], from a zero state."""
    users, batch, frames, inputs = x.shape
    hidden = w_hh.shape[-1]
    gates_in = torch.baddbmm(
        b_ih.unsqueeze(1), x.reshape(users, batch * frames, inputs), w_ih.transpose(1, 2)
    )
    # per-frame views made with split/unbind, whose backward is one cat/stack (a slice's allocates a full zero tensor)
    gates_in_rz, gates_in_n = gates_in.view(users, batch, frames, 3 * hidden).split(
        [2 * hidden, hidden], dim=-1
    )
    w_hh_t, b_hh = w_hh.transpose(1, 2).contiguous(), b_hh.unsqueeze(1)
    h = x.new_zeros(users, batch, hidden)
    outputs = []
    for gi_rz, gi_n in zip(gates_in_rz.unbind(2), gates_in_n.unbind(2), strict=True):
        gh_rz, gh_n = torch.baddbmm(b_hh, h, w_hh_t).split([2 * hidden, hidden], dim=-1)
        reset, update = torch.sigmoid(gi_rz + gh_rz).split([hidden, hidden], dim=-1)
        new = torch.tanh(gi_n + gh_n * reset)
        h = (h - new) * update + new
        outputs.append(h)
    return torch.stack(outputs, dim=2)


def stacked_forward(template: GRUMaskNet, weights: dict[str, Tensor], wave: Tensor) -> Tensor:
    """U users' ``GRUMaskNet`` forward at once: ``wave`` [U, B, T] -> enhanced [U, B, T]. ``template`` gives the
    architecture and the STFT (it has no weights of its own there); ``weights`` are the users' parameters
    ``{state_dict name: [U, ...]}`` (``stack_weights``)."""
    users, batch, samples = wave.shape
    spec = template.stft(wave.reshape(users * batch, samples))  # [U*B, F, frames] complex
    magnitude = spec.abs().transpose(1, 2)
    if template.magnitude == "log1p":
        magnitude = torch.log1p(magnitude)
    h = magnitude.reshape(users, batch, *magnitude.shape[1:])
    for layer in range(template.num_layers):
        h = gru_frames(
            h,
            weights[f"gru.weight_ih_l{layer}"],
            weights[f"gru.weight_hh_l{layer}"],
            weights[f"gru.bias_ih_l{layer}"],
            weights[f"gru.bias_hh_l{layer}"],
        )
    frames = h.shape[2]
    logits = torch.baddbmm(
        weights["mask.bias"].unsqueeze(1),
        h.reshape(users, batch * frames, -1),
        weights["mask.weight"].transpose(1, 2),
    )
    mask = torch.sigmoid(logits).view(users * batch, frames, -1).transpose(1, 2)  # [U*B, F, frames]
    out = template.stft.inverse(spec * mask, length=samples)
    return out.view(users, batch, samples)
