"""Models from torchvision and timm by name: ``torchvision:resnet18``, ``timm:resnet18``.

Two prefix resolvers of the model registry (not one registration per model): the part
after the prefix names a ``torchvision.models`` builder or a ``timm.create_model`` model.
``num_classes`` and the input channels come from the dataset where the constructor takes
them (timm: ``in_chans``; torchvision builders take 3-channel images only), the recipe's
``model.kwargs`` go to the constructor. Random initialisation unless the kwargs ask for
weights (``weights: DEFAULT`` / ``pretrained: true``, which the package downloads itself).

Both packages are optional extras (``pip install 'prunebench[torchvision]'`` /
``'prunebench[timm]'``); a missing one is a one-line error naming the extra. A model built
this way depends on the package's version, so its code identity (part of the dense stage's
key, hence of every run id) is ``"<package>==<version>"``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from prunebench.errors import RecipeError, RegistryError
from prunebench.models.base import MODELS, check_shape
from prunebench.registry import PrefixResolver

#: keyword arguments set from the dataset, never from ``model.kwargs``
_FROM_DATA = ("num_classes", "in_chans", "in_channels")


def _import(package: str, module: str, full_name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RegistryError(
            f"model {full_name!r} needs the {package} extra: pip install 'prunebench[{package}]'"
        ) from None
    except Exception as exc:  # a broken install (e.g. a torchvision built for another torch)
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise RegistryError(
            f"model {full_name!r} needs the {package} extra, but importing {module} failed "
            f"({msg}); reinstall it to match torch: pip install 'prunebench[{package}]'"
        ) from None


def package_version(package: str, full_name: str) -> str:
    """``"<package>==<version>"`` of an installed external package (its code identity)."""
    module = sys.modules.get(package) or _import(package, package, full_name)
    version = getattr(module, "__version__", None)
    if not version:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version(package)
        except Exception:  # noqa: BLE001 - no metadata: the name alone
            version = "unknown"
    return f"{package}=={version}"


def _check_user_kwargs(full_name: str, kwargs: dict[str, Any]) -> None:
    bad = sorted(k for k in kwargs if k in _FROM_DATA)
    if bad:
        raise RecipeError(
            f"model {full_name!r}: {', '.join(bad)} is set from the dataset; remove it from "
            "model.kwargs"
        )


def _construct(full_name: str, fn: Callable[..., nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        msg = " ".join(str(exc).split())
        raise RecipeError(f"model {full_name!r} rejected its arguments: {msg}") from None
    except Exception as exc:  # noqa: BLE001 - the constructor's own checks, as one line
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise RecipeError(f"model {full_name!r} could not be built: {msg}") from None
    if not isinstance(model, nn.Module):
        raise RecipeError(f"model {full_name!r} did not build an nn.Module")
    return model


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# ------------------------------------------------------------------------- torchvision


def _torchvision_builder(rest: str, full_name: str) -> Callable[..., nn.Module]:
    tvm = _import("torchvision", "torchvision.models", full_name)
    fn = None
    getter = getattr(tvm, "get_model_builder", None)
    if getter is not None:
        try:
            fn = getter(rest)
        except (ValueError, KeyError):
            fn = None
    if fn is None:
        candidate = getattr(tvm, rest, None)
        if callable(candidate) and not isinstance(candidate, type) and not rest.startswith("_"):
            fn = candidate
    if fn is None:
        lister = getattr(tvm, "list_models", None)
        names = sorted(lister()) if callable(lister) else []
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise RegistryError(
            f"unknown model {full_name!r}: torchvision.models has no builder {rest!r}"
            + (f"; available: {shown}" if shown else "")
        )

    def build(in_channels: int, num_classes: int, input_size: tuple[int, int],
              **kwargs: Any) -> nn.Module:
        check_shape(in_channels, num_classes, input_size)
        _check_user_kwargs(full_name, kwargs)
        if in_channels != 3:
            raise RecipeError(
                f"model {full_name!r} takes 3-channel images, the dataset has {in_channels}; "
                "allowed: a 3-channel dataset (or a timm: model, whose in_chans is set)"
            )
        if not _accepts(fn, "num_classes"):
            raise RecipeError(
                f"model {full_name!r} does not take num_classes; allowed: builders that do"
            )
        return _construct(full_name, fn, {**kwargs, "num_classes": num_classes})

    build.__name__ = build.__qualname__ = full_name
    build.__doc__ = f"torchvision.models.{rest} (torchvision extra)."
    return build


# ------------------------------------------------------------------------------- timm


def _timm_builder(rest: str, full_name: str) -> Callable[..., nn.Module]:
    timm = _import("timm", "timm", full_name)
    is_model = getattr(timm, "is_model", None)
    if callable(is_model) and not is_model(rest):
        raise RegistryError(
            f"unknown model {full_name!r}: timm has no model {rest!r} (see timm.list_models())"
        )

    def build(in_channels: int, num_classes: int, input_size: tuple[int, int],
              **kwargs: Any) -> nn.Module:
        check_shape(in_channels, num_classes, input_size)
        _check_user_kwargs(full_name, kwargs)
        model = _construct(
            full_name,
            lambda **kw: timm.create_model(rest, **kw),
            {**kwargs, "num_classes": num_classes, "in_chans": in_channels},
        )
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
        classifier = cfg.get("classifier") if isinstance(cfg, dict) else None
        if isinstance(classifier, str) and getattr(model, "output_layer", None) is None:
            try:
                model.get_submodule(classifier)
                model.output_layer = classifier
            except AttributeError:
                pass
        return model

    build.__name__ = build.__qualname__ = full_name
    build.__doc__ = f"timm model {rest} (timm extra)."
    return build


MODELS.add_prefix("torchvision", PrefixResolver(
    resolve=_torchvision_builder,
    code=lambda rest, full: package_version("torchvision", full),
    doc="any torchvision.models builder, e.g. torchvision:resnet18 (torchvision extra)",
))
MODELS.add_prefix("timm", PrefixResolver(
    resolve=_timm_builder,
    code=lambda rest, full: package_version("timm", full),
    doc="any timm model, e.g. timm:resnet18 (timm extra)",
))
