"""Telling apart a tensor that a ``torch.func`` transform wraps, with public calls only."""

from __future__ import annotations

from torch import Tensor


def wrapped_by_torch_func(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a wrapper of ``torch.func`` (``vmap``, ``grad``, ``jacrev``, ...).

    Such a tensor has no storage of its own: its values cannot be read on the host while
    ``vmap`` batches them, and an in-place operation that writes a batched operand into an
    unbatched tensor is refused. Asking for the data pointer tells it apart.
    """
    try:
        tensor.data_ptr()
    except RuntimeError:  # "Cannot access data pointer of Tensor that doesn't have storage"
        return True
    return False
