"""The MLP under study and the linear model, registered by name; their modules are in :mod:`probe.models.blocks`."""

from __future__ import annotations

from probe.models.registry import register
from probe.models.blocks import MLP, BottleneckMLP
from probe.models.tokens import token_mlp


@register("mlp", "fully connected network: --width units x --depth hidden layers (arch=bottleneck: residual blocks)",
          kinds=("image", "sequence"))
def mlp(task, width, depth, param, activation: str = "relu", bias: bool = True, arch: str = "plain", expansion: int = 4,
        embed_dim: int = 0, share_embed: bool = False):
    """On sequence tasks: an MLP on the flattened one-hot tokens (T*vocab inputs; real features for
    icl-regression), or with ``embed_dim`` > 0 on learned per-position embeddings, not shared across positions
    unless ``share_embed`` (see :class:`probe.models.tokens.TokenMLP`)."""
    if task.geometry.kind == "sequence":
        return token_mlp(task, width, depth, param, activation, bias, arch, embed_dim, share_embed)
    if embed_dim or share_embed:
        raise ValueError("embed_dim and share_embed apply to sequence tasks only")
    if task.loss == "ce" and task.y_train.dim() > 1:
        raise ValueError("per-position targets need a sequence model")
    if arch == "plain":
        return MLP(task.n_inputs, task.n_outputs, width, depth, activation, bias, param)
    if arch == "bottleneck":
        if param != "standard":
            raise ValueError("arch=bottleneck supports --param standard only")
        return BottleneckMLP(task.n_inputs, task.n_outputs, width, depth, expansion, activation)
    raise ValueError(f"arch must be plain or bottleneck, got {arch!r}")


@register("linear", "linear model (multinomial logistic regression for classes)", kinds=("image",), uses=())
def linear(task, width, depth, param, bias: bool = True):
    return MLP(task.n_inputs, task.n_outputs, width, 0, "identity", bias, "standard")
