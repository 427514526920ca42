"""CycleGAN's image pool of past generated images, kept on the images' device."""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor onto the device without waiting for the device (pinned, non-blocking)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class ImagePool:
    """A buffer of past generated images (size 50 in CycleGAN), with their labels. Until it is full,
    images go in and come straight back out; afterwards each image, with probability 1/2, is swapped
    for a stored one and the stored one is returned, so the discriminator also sees older generator
    outputs."""

    def __init__(self, size: int, gen: torch.Generator | None = None):
        self.size, self.gen, self.images, self.labels, self.count = size, gen, None, None, 0

    def query(self, batch: torch.Tensor, labels: torch.Tensor | None = None):
        """Images (and labels, when given) back, some swapped for stored ones."""
        batch = batch.detach()
        if labels is None:
            labels = torch.zeros(len(batch), dtype=torch.long, device=batch.device)
            return self._query(batch, labels)[0]
        return self._query(batch, labels)

    def sample(self, n: int):
        """`n` stored images and their labels, drawn with replacement, nothing stored; None while
        the pool is empty (or has size 0)."""
        if not self.count:
            return None
        slots = to_device(torch.randint(self.count, (n,), generator=self.gen), self.images.device)
        return self.images[slots], self.labels[slots]

    def _query(self, batch, labels):
        if self.size == 0:
            return batch, labels
        if self.images is None:
            self.images = batch.new_empty((self.size, *batch.shape[1:]))
            self.labels = labels.new_empty((self.size,))
        fill = min(self.size - self.count, len(batch))
        self.images[self.count:self.count + fill] = batch[:fill]
        self.labels[self.count:self.count + fill] = labels[:fill]
        self.count += fill
        # the coin flips and slots are drawn on the CPU: no device sync per image; a slot is swapped
        # at most once a batch, so each returned image is one stored before this batch
        n = len(batch) - fill
        swap = (torch.rand(n, generator=self.gen) < 0.5).tolist()
        slots = torch.randint(self.size, (n,), generator=self.gen).tolist()
        taken: dict[int, int] = {}   # slot -> row of the batch
        for i, (s, j) in enumerate(zip(swap, slots)):
            if s and j not in taken:
                taken[j] = fill + i
        if not taken:
            return batch, labels
        rows = to_device(torch.tensor(list(taken.values())), batch.device)
        slot = to_device(torch.tensor(list(taken)), batch.device)
        out, out_labels = batch.clone(), labels.clone()
        out[rows], out_labels[rows] = self.images[slot], self.labels[slot]
        self.images[slot], self.labels[slot] = batch[rows], labels[rows]
        return out, out_labels
