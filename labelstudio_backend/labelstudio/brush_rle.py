"""A bounded decoder of Label Studio's brush RLE (thi-ng rle-pack: a 32-bit value count, a 5-bit word size, four
4-bit run-length sizes, then blocks of [1 bit repeat?][2 bits size index][run length][one word, or run words]).

label-studio-sdk's decoder first turns every byte into eight one-character strings, so a 28 MB body costs gigabytes
and tens of seconds. This one reads the bits in place: a repeat block is a slice fill, a literal block one vectorised
read; its work is capped by MAX_BLOCKS, so no RLE, however crafted, costs more than that many block steps.
"""
from __future__ import annotations

import numpy as np

MAX_BLOCKS = 250_000  # a hand-drawn mask has a few blocks per row; 250k is a 600x800 noise mask, < 1 s


class BrushRleError(ValueError):
    """The RLE is corrupt or exceeds a bound; the message says which."""


def decode_brush_values(data: bytes, expected: int, max_blocks: int = MAX_BLOCKS) -> np.ndarray:
    """The `expected` uint8 values an RLE encodes (its header must claim exactly that many)."""
    bits = np.unpackbits(np.frombuffer(data, np.uint8))  # literal blocks read their words from here at once
    total = len(bits)
    position = 0

    def read(width: int) -> int:
        nonlocal position
        end = position + width
        if end > total:
            raise BrushRleError("brush rle is corrupt: it ends in the middle of a block")
        last = (end + 7) >> 3
        chunk = int.from_bytes(data[position >> 3:last], "big")
        position = end
        return (chunk >> (last * 8 - end)) & ((1 << width) - 1)

    count = read(32)
    if count != expected:
        raise BrushRleError(f"brush rle encodes {count} values, expected {expected}")
    word = read(5) + 1
    if word > 8:
        raise BrushRleError(f"brush rle uses {word}-bit words; a brush mask has byte values (8 bits at most)")
    sizes = [read(4) + 1 for _ in range(4)]
    weights = (1 << np.arange(word - 1, -1, -1)).astype(np.uint16)
    word_mask = (1 << word) - 1
    padded = data + bytes(8)
    out = np.zeros(expected, np.uint8)
    index = blocks = 0
    while index < expected:
        blocks += 1
        if blocks > max_blocks:
            raise BrushRleError(f"brush rle has more than {max_blocks} blocks; refused as too costly to decode")
        # one 40-bit window holds a whole block header (1 + 2 + 16 bits) and a repeat's word (8 bits at most)
        byte = position >> 3
        window = int.from_bytes(padded[byte:byte + 5], "big")
        top = 40 - (position & 7)  # bits of the window from `position` on
        size = sizes[(window >> (top - 3)) & 3]
        run = ((window >> (top - 3 - size)) & ((1 << size) - 1)) + 1
        if (window >> (top - 1)) & 1:  # a repeat; a run past the end is cut there, as Label Studio's decoders do
            position += 3 + size + word
            if position > total:
                raise BrushRleError("brush rle is corrupt: it ends in the middle of a block")
            out[index:index + run] = (window >> (top - 3 - size - word)) & word_mask
        else:
            position += 3 + size
            end = position + run * word
            if index + run > expected or end > total:
                raise BrushRleError(f"brush rle is corrupt: a literal block of {run} values passes its end")
            out[index:index + run] = bits[position:end].reshape(run, word) @ weights
            position = end
        index += run
    return out
