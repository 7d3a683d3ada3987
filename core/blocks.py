"""Consecutive blocks of rows or columns, sized so a block's temporaries stay bounded."""

from __future__ import annotations


def blocks(n_items: int, per_block: int) -> list[slice]:
    """Consecutive slices of at most ``per_block`` (≥ 1) items covering 0..``n_items``."""
    step = max(1, per_block)
    return [slice(i, min(i + step, n_items)) for i in range(0, n_items, step)]


def blocks_within(n_items: int, item_size: int, budget: int) -> list[slice]:
    """:func:`blocks` of items of ``item_size`` elements each (e.g. a gene's N cells), with at
    most ``budget`` elements per block (at least one item)."""
    return blocks(n_items, budget // max(1, item_size))
