"""Layer listing and activation extraction through torchvision feature extraction (torch.fx).

A layer is an FX node name as ``torchvision.models.feature_extraction.get_graph_node_names`` reports it
in eval mode (``relu1``, ``block2.pool``, ``layer3.1.relu_1``), or a module name such as ``layer3``,
which selects that module's last node. ``"x"`` is always the raw input image.

Extraction runs the model in eval mode without gradients, one forward pass for all requested layers,
and returns per-image activations flattened to (B, d) float32, after optional adaptive average pooling
of 4-D conv maps to S x S (d = C*S*S). :class:`ActivationCache` keeps a layer's activations on disk as
safetensors shards when they do not fit in RAM.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.feature_extraction import (
    create_feature_extractor,
    get_graph_node_names,
)

from noisefix.errors import ConfigError, ProbeError, shorten_names
from noisefix.nn.device import channels_last, to_layout
from noisefix.nn.models import TRIVIAL_MODULES, default_layers

INPUT = "x"
LAYOUTS = ("auto", "channels_last", "contiguous")  # ActivationExtractor's memory layouts


# Nodes left out of "all": reshapes of the previous node, and ops that return no per-image tensor.
_TRIVIAL_OPS = frozenset(
    {"flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze", "size", "dim", "getattr", "getitem"}
)


@dataclass(frozen=True)
class LayerInfo:
    """One probe-able layer: ``shape`` is the per-image output shape, e.g. (64, 7, 7) or (2048,);
    ``dim`` the flattened size, after pooling when a pool plan was given to :func:`list_layers`."""

    name: str
    shape: tuple[int, ...]
    dim: int


def graph_nodes(model: nn.Module) -> list[str]:
    """Eval-mode FX node names in execution order; the input placeholder is reported as ``"x"``."""
    nodes = get_graph_node_names(model, suppress_diff_warning=True)[1]
    return [INPUT] + nodes[1:]


def _is_trivial(model: nn.Module, name: str) -> bool:
    """True for nodes that repeat their input or give no per-image tensor (see ``_TRIVIAL_OPS``)."""
    for getter in (model.get_submodule, model.get_parameter, model.get_buffer):
        try:
            found = getter(name)
        except AttributeError:
            continue
        return not isinstance(found, nn.Module) or isinstance(found, TRIVIAL_MODULES)
    op = re.sub(r"_[0-9]+$", "", name.rsplit(".", 1)[-1])
    return op in _TRIVIAL_OPS


def _concrete_nodes(names: list[str], nodes: list[str]) -> dict[str, str]:
    """Map each requested name to the graph node that produces it (a module name -> its last node)."""
    concrete = {}
    for name in names:
        if name == INPUT or name in nodes:
            concrete[name] = name
            continue
        inside = [n for n in nodes if n.startswith(name + ".")]
        if not inside:
            raise ProbeError(
                f"unknown layer {name!r}; valid layers: {shorten_names(nodes, limit=40)} "
                "(run `noisefix layers` to list them with their sizes)"
            )
        concrete[name] = inside[-1]
    return concrete


def resolve_layers(model: nn.Module, spec: str) -> list[str]:
    """Turn a layer spec into layer names: ``"default"``, ``"all"`` or comma-separated names.

    ``"all"`` is ``"x"`` plus every eval-mode node except trivial ones: Identity/Flatten/Dropout
    modules, parameters and buffers, reshapes (flatten, view, reshape, contiguous, squeeze, unsqueeze)
    and non-tensor ops (size, dim, getattr, getitem). Unknown names raise ProbeError listing valid ones.
    """
    text = spec.strip()
    if text == "default":
        return default_layers(model)
    nodes = graph_nodes(model)
    if text == "all":
        return [INPUT] + [n for n in nodes[1:] if not _is_trivial(model, n)]
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise ProbeError(f"layer spec {spec!r} names no layer; use default, all or names like {nodes[-1]}")
    _concrete_nodes(names, nodes)
    return names


def parse_pool(spec: str) -> int | None | str:
    """``"none"`` -> None, ``"avg:S"`` -> S (pool conv maps to S x S), ``"auto"`` -> ``"auto"``."""
    text = spec.strip().lower()
    if text == "none":
        return None
    if text == "auto":
        return "auto"
    match = re.fullmatch(r"avg:([0-9]+)", text)
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(f"bad pool spec {spec!r}; use none, auto or avg:S with S a positive integer (e.g. avg:4)")
    return int(match.group(1))


def _pooled_dim(shape: tuple[int, ...], size: int | None) -> int:
    if size is None or len(shape) != 3:
        return math.prod(shape)
    return shape[0] * size * size


def plan_pooling(infos: list[LayerInfo], pool: int | None | str, *, max_dim: int = 16384) -> dict[str, int | None]:
    """Pool size S (or None) per layer; only 4-D conv maps, per-image shape (C, H, W), are pooled.

    ``pool=None``: no pooling. ``pool=S``: every map larger than S x S is pooled to S x S.
    ``pool="auto"``: a map with C*H*W <= max_dim is kept; a larger one gets the largest S with
    C*S*S <= max_dim (at least 1, at most min(H, W)).
    """
    if pool is not None and pool != "auto" and (isinstance(pool, bool) or not isinstance(pool, int) or pool < 1):
        raise ConfigError(f"bad pool value {pool!r}; use None, 'auto' or a positive integer S")
    plan: dict[str, int | None] = {}
    for info in infos:
        size = None
        if len(info.shape) == 3 and pool is not None:
            c, h, w = info.shape
            if pool == "auto":
                if c * h * w > max_dim:
                    size = max(1, min(math.isqrt(max_dim // c), h, w))
            elif h > pool or w > pool:
                size = pool
        plan[info.name] = size
    return plan


def apply_pooling(infos: list[LayerInfo], spec: str) -> tuple[list[LayerInfo], dict[str, int | None]]:
    """`infos` (unpooled, from :func:`list_layers`) with their dims after the pooling plan of a ``--pool`` spec
    ("none", "auto" or "avg:S"), and that plan (for :class:`ActivationExtractor`); no forward pass."""
    pools = plan_pooling(infos, parse_pool(spec))
    return [replace(i, dim=_pooled_dim(i.shape, pools[i.name])) for i in infos], pools


def _disable_inplace(module: nn.Module) -> None:
    """Make in-place ops of a feature extractor out-of-place, so returned activations stay intact.

    Leaf modules are shared with the original model, so an in-place one is replaced by a shallow copy.
    """
    for graph in (module.train_graph, module.eval_graph):
        for node in graph.nodes:
            if node.op == "call_module" and getattr(module.get_submodule(node.target), "inplace", False):
                leaf = copy.copy(module.get_submodule(node.target))
                leaf.inplace = False
                module.set_submodule(node.target, leaf)
            elif node.op == "call_function" and node.kwargs.get("inplace"):
                node.kwargs = {**node.kwargs, "inplace": False}
            elif node.op == "call_method" and node.target.endswith("_") and callable(
                getattr(torch.Tensor, node.target[:-1], None)
            ):
                node.target = node.target[:-1]  # e.g. x.relu_() -> x.relu()
    module.recompile()


class ActivationExtractor:
    """Callable returning flattened activations of ``layers`` for a batch, one forward pass in eval mode.

    ``pools`` maps a layer to S: its 4-D output (B, C, H, W) is adaptive-average-pooled to (B, C, S, S)
    first. ``autocast_dtype`` (e.g. torch.bfloat16) runs the forward under autocast on CUDA and is
    ignored on CPU. The model is moved to ``device`` and put in eval mode (BatchNorm uses its running
    statistics, so an image's activations do not depend on the rest of the batch) and, where ``layout``
    says so, into channels-last layout: "auto" (`nn.device.channels_last`, decided at the first batch from its
    image size), "channels_last" or "contiguous". The batches follow; the flattened activations keep the
    usual (C, H, W) order either way.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[str],
        *,
        pools: dict[str, int | None] | None = None,
        device: str | torch.device = "cpu",
        autocast_dtype: torch.dtype | None = None,
        logits: bool = False,
        layout: str = "auto",
    ):
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if not layers:
            raise ProbeError("no layers to extract; pass names such as 'x' or use resolve_layers(model, 'default')")
        self.layers = list(dict.fromkeys(layers))
        self.pools = dict(pools or {})
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        model.to(self.device).eval()
        self._model, self._layout = model, layout
        self._last: bool | None = None                                        # set by the first batch
        nodes = graph_nodes(model)
        self._concrete = _concrete_nodes(self.layers, nodes)
        self._output = nodes[-1] if logits and len(nodes) > 1 else None  # the graph's last node: the model output
        wanted = sorted({node for node in self._concrete.values() if node != INPUT} | {self._output} - {None})
        self._module = None
        if wanted:
            self._module = create_feature_extractor(model, return_nodes=wanted, suppress_diff_warning=True).eval()
            _disable_inplace(self._module)

    def _autocast(self):
        if self.autocast_dtype is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def _set_layout(self, x: torch.Tensor) -> None:
        """At the first batch x (B, C, H, W): its layout, which the model's weights then follow."""
        if self._last is None:
            auto = x.dim() == 4 and channels_last(self._model, self.device, tuple(x.shape[-2:]))
            self._last = auto if self._layout == "auto" else self._layout == "channels_last"
            self._model.to(memory_format=torch.channels_last if self._last else torch.contiguous_format)

    def _nodes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(self.device)
        self._set_layout(x)
        outputs = {INPUT: x}
        if self._module is not None:
            with torch.no_grad(), self._autocast():
                outputs.update(self._module.eval()(to_layout(x, self._last)))
        return outputs

    def _requested(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The requested layers' entries of the graph's node outputs."""
        return {name: outputs[node] for name, node in self._concrete.items()}

    def raw(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unflattened, unpooled outputs {layer: (B, ...)} for a float batch x (B, C, H, W)."""
        return self._requested(self._nodes(x))

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, C, H, W) float -> {layer: (B, d) float32 contiguous}, pooled then flattened."""
        return self._flat(self.raw(x))

    def with_logits(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """`self(x)` and the model's output (B, K) float32 from the same forward pass; None when the extractor
        was built without `logits=True` or the graph's last node gives no (B, K) tensor (then call the model)."""
        outputs = self._nodes(x)
        out = outputs.get(self._output) if self._output is not None else None
        ok = isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == x.shape[0]
        return self._flat(self._requested(outputs)), out.detach().float() if ok else None

    def _flat(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        result = {}
        for name, act in raw.items():
            act = act.detach().float()
            size = self.pools.get(name)
            if size is not None and act.dim() == 4:
                act = F.adaptive_avg_pool2d(act, size)  # (B, C, S, S)
            result[name] = act.reshape(act.shape[0], -1).contiguous()  # (B, d)
        return result


def forward_values(model: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Values one image's forward pass materializes: the input and the output of every leaf module (functional
    ops such as residual additions not counted), from one eval-mode pass on zeros on the model's device. What
    an extraction batch streams through memory per image (`scoring.plan.extraction_batch`)."""
    sizes: list[int] = []

    def record(_module, _inputs, out) -> None:
        if isinstance(out, torch.Tensor) and out.dim() > 0:
            sizes.append(out[0].numel())

    leaves = [m for m in model.modules() if next(m.children(), None) is None and not isinstance(m, TRIVIAL_MODULES)]
    handles = [m.register_forward_hook(record) for m in leaves]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *in_shape, device=next(model.parameters(), torch.empty(0)).device))
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return math.prod(in_shape) + sum(sizes)


def list_layers(
    model: nn.Module,
    in_shape: tuple[int, int, int],
    layers: list[str] | None = None,
    *,
    pools: dict[str, int | None] | None = None,
) -> list[LayerInfo]:
    """Shapes and dims of ``layers`` (None -> :func:`default_layers`), from one forward pass on zeros.

    ``pools`` (from :func:`plan_pooling`) makes ``dim`` the pooled size. Raises ProbeError for a
    layer that does not produce one tensor per image, ConfigError when the model cannot take in_shape.
    """
    names = default_layers(model) if layers is None else list(layers)
    extractor = ActivationExtractor(model, names, device=next(model.parameters(), torch.empty(0)).device)
    batch = torch.zeros(2, *in_shape, device=extractor.device)  # 2 images, to tell batched outputs apart
    try:
        outputs = extractor.raw(batch)
    except RuntimeError as exc:
        raise ConfigError(f"the model cannot run on images of shape {tuple(in_shape)}: {exc}".splitlines()[0]) from exc
    infos = []
    for name in extractor.layers:
        act = outputs[name]
        if not isinstance(act, torch.Tensor) or act.dim() < 2 or act.shape[0] != 2:
            raise ProbeError(f"layer {name!r} does not produce one tensor per image; choose another layer")
        shape = tuple(act.shape[1:])
        infos.append(LayerInfo(name=name, shape=shape, dim=_pooled_dim(shape, (pools or {}).get(name))))
    return infos
