"""The int8 format of `llmctl compress` (see llmctl/compress.py for what is quantized and why): the kernels,
writing a model as `model.int8.safetensors` + the `llmctl-int8.json` manifest, and loading it back. Nothing here
reads a pickle or runs code from the folder. Kept apart from the command (which measures with the task and
evaluation modules) so that `modeling.load_pretrained` can load int8 folders without importing those."""

from __future__ import annotations

import json
from pathlib import Path

from llmctl import runs

MANIFEST = "llmctl-int8.json"
WEIGHTS = "model.int8.safetensors"
FORMAT = "llmctl-int8"
VERSION = 1


class Int8Error(Exception):
    """An int8 folder that cannot be loaded (one line naming the file)."""


# --------------------------------------------------------------------------------------------------- kernels


def quantize_rows(weight):
    """Symmetric int8 per row: (int8 tensor, fp32 scale per row) with weight ~= int8 * scale[:, None]."""
    import torch

    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantize_rows(q, scale):
    return q.float() * scale.float()[:, None]


def _int8_linear_class():
    """Int8Linear, defined on first use so that importing this module does not import torch."""
    global _INT8_LINEAR
    if _INT8_LINEAR is not None:
        return _INT8_LINEAR
    import torch
    from torch import nn

    class Int8Linear(nn.Module):
        """y = x W^T + b with W held as int8 rows and fp32 row scales; activations quantized per row at run time.

        On CPU in fp32: dynamic int8 through torch._int_mm. Elsewhere (a GPU, bf16): W is dequantized for the
        call, so the module works on any device, without the speed-up."""

        def __init__(self, in_features: int, out_features: int, q, scale, bias=None):
            super().__init__()
            self.in_features, self.out_features = in_features, out_features
            self.register_buffer("weight_int8", q)
            self.register_buffer("weight_scale", scale.float())
            self.register_buffer("bias", None if bias is None else bias.float())

        @property
        def weight(self):
            """The int8 rows: model code that looks at `layer.weight.dtype` (T5 casts activations to it unless it
            is int8) sees what it expects of an int8 layer."""
            return self.weight_int8

        def forward(self, x):
            shape = x.shape
            rows = x.reshape(-1, self.in_features)
            if rows.device.type != "cpu" or rows.dtype != torch.float32 or rows.shape[0] == 0:
                w = dequantize_rows(self.weight_int8, self.weight_scale).to(rows.dtype)
                out = nn.functional.linear(rows, w, None if self.bias is None else self.bias.to(rows.dtype))
            else:
                s = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
                q = torch.round(rows / s).clamp_(-127, 127).to(torch.int8)
                out = torch._int_mm(q, self.weight_int8.t()).to(torch.float32)
                out = out.mul_(s).mul_(self.weight_scale)
                if self.bias is not None:
                    out = out.add_(self.bias)
            return out.reshape(*shape[:-1], self.out_features)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    _INT8_LINEAR = Int8Linear
    return Int8Linear


_INT8_LINEAR = None


def _linear_modules(model) -> dict:
    """name -> (module, transposed) for every linear layer: nn.Linear, and transformers' Conv1D (GPT-2), whose
    weight is stored (in, out)."""
    from torch import nn

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = ()
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found[name] = (module, False)
        elif Conv1D and isinstance(module, Conv1D):
            found[name] = (module, True)
    return found


# ------------------------------------------------------------------------------------------------ compress


def prune_(model, sparsity: float) -> float:
    """Zero the fraction `sparsity` of each linear layer's weights of smallest magnitude; returns the fraction
    of linear weights that are zero afterwards."""
    import torch

    zeros = total = 0
    with torch.no_grad():
        for module, _ in _linear_modules(model).values():
            w = module.weight
            k = int(round(sparsity * w.numel()))
            if k > 0:
                threshold = w.abs().flatten().kthvalue(k).values
                w.masked_fill_(w.abs() <= threshold, 0.0)
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / total if total else 0.0


def save_int8(model, to: Path, *, min_features: int, sparsity: float = 0.0) -> dict:
    """Write `model` (fp32, unchanged) as int8 into `to`: WEIGHTS and MANIFEST. Returns the manifest."""
    import torch
    from safetensors.torch import save_file

    linears = _linear_modules(model)
    embedding = model.get_input_embeddings()
    state = model.state_dict(keep_vars=True)
    # Tied parameters (T5's shared embedding and lm_head) appear under several names: stored once.
    canonical: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for key, value in state.items():
        ident = id(value)
        if ident in canonical:
            aliases[key] = canonical[ident]
        else:
            canonical[ident] = key
    quantize = {}  # key -> transposed (the weight is stored as (in, out))
    for name, (module, transposed) in linears.items():
        quantize[f"{name}.weight" if name else "weight"] = transposed
    for name, module in model.named_modules():
        if module is embedding:
            quantize[f"{name}.weight"] = False
    tensors: dict = {}
    entries: dict[str, dict] = {}
    for key, value in state.items():
        if key in aliases:
            continue
        names = [key] + [a for a, c in aliases.items() if c == key]
        hit = next((n for n in names if n in quantize), None)
        if hit is not None and value.dim() == 2 and value.dtype.is_floating_point:
            w = value.detach().t() if quantize[hit] else value.detach()
            q, scale = quantize_rows(w)
            tensors[f"{key}::int8"], tensors[f"{key}::scale"] = q, scale
            entries[key] = {"int8": True, "transposed": quantize[hit]}
        else:
            t = value.detach()
            tensors[key] = (t.float() if t.dtype.is_floating_point else t).contiguous().clone()
            entries[key] = {"int8": False}
    modules = {}
    for name, (module, transposed) in linears.items():
        key = f"{name}.weight"
        source = aliases.get(key, key)
        in_features = module.weight.shape[0] if transposed else module.weight.shape[1]
        modules[name] = {"weight": source, "bias": f"{name}.bias" if module.bias is not None else None,
                         "transposed": transposed, "in_features": int(in_features),
                         "out_features": int(module.weight.numel() // in_features),
                         "compute": "int8" if in_features >= min_features else "fp32"}
    manifest = {"format": FORMAT, "version": VERSION, "architectures": list(model.config.architectures or []),
                "tensors": entries, "aliases": aliases, "modules": modules, "min_features": min_features,
                "sparsity": sparsity, "torch": torch.__version__}
    to.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(to / WEIGHTS), metadata={"format": FORMAT})
    runs.write_json(to / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------------- load


def is_compressed(path) -> bool:
    return Path(str(path), MANIFEST).is_file()


def load_int8(path, auto_class, config):
    """A folder written by `save_int8` as a model of `auto_class`: built from its `config` (config.json), filled
    from the safetensors file (never a pickle), int8 layers in place. Errors are one-line Int8Errors naming the
    file."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(str(path))
    manifest = _read_manifest(path)
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise Int8Error(f"{path / WEIGHTS}: cannot read: {str(exc).splitlines()[0] if str(exc) else exc}"
                                  ) from None
    try:
        model = auto_class.from_config(config)
    except ValueError as exc:
        raise Int8Error(f"{path}: cannot build {auto_class.__name__} from config.json: {exc}") from None
    state = {}
    for key, entry in manifest["tensors"].items():
        try:
            if entry.get("int8"):
                w = dequantize_rows(tensors[f"{key}::int8"], tensors[f"{key}::scale"])
                state[key] = w.t() if entry.get("transposed") else w
            else:
                state[key] = tensors[key]
        except KeyError as exc:
            raise Int8Error(f"{path / WEIGHTS}: tensor {exc.args[0]!r} named in {MANIFEST} is missing"
                                      ) from None
    for alias, key in manifest["aliases"].items():
        if key not in state:
            raise Int8Error(f"{path / MANIFEST}: alias {alias!r} points to unknown tensor {key!r}")
        state[alias] = state[key]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}" if unexpected
                else f"shape of {wrong[0]!r} {tuple(state[wrong[0]].shape)} != {tuple(expected[wrong[0]].shape)}")
        raise Int8Error(f"{path / WEIGHTS}: does not fit the {auto_class.__name__} of config.json "
                                  f"({what}; {len(missing) + len(unexpected) + len(wrong)} problem(s))")
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    Int8Linear = _int8_linear_class()
    for name, info in manifest["modules"].items():
        if info.get("compute") != "int8":
            continue
        key = info["weight"]
        bias = state.get(info["bias"]) if info.get("bias") else None
        layer = Int8Linear(int(info["in_features"]), int(info["out_features"]), tensors[f"{key}::int8"],
                           tensors[f"{key}::scale"], bias)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer)
    model.eval()
    return model


def _read_manifest(path: Path) -> dict:
    where = path / MANIFEST
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Int8Error(f"{where}: not a readable JSON manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise Int8Error(f"{where}: not an llmctl int8 manifest (format must be {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise Int8Error(f"{where}: version {manifest.get('version')!r} is not supported (this llmctl reads "
                         f"version {VERSION})")
    for key, kind in (("tensors", dict), ("aliases", dict), ("modules", dict)):
        if not isinstance(manifest.get(key), kind):
            raise Int8Error(f"{where}: key {key!r} must be an object")
    return manifest
