"""The package side by side with denoising-diffusion-pytorch (lucidrains) and diffusers (issue 9).

Used by ``benchmarks/bench_peers.py``; the peers are optional (``benchmarks/requirements-peers.txt``,
installed into ``benchmarks/.venv`` by ``make bench-peers``) and imported only where they are used:

- :mod:`.configs`: matching configurations, ratios, targets, MFU arithmetic and peak-FLOP table (pure);
- :mod:`.flops`: FLOPs counted with ``torch.utils.flop_counter.FlopCounterMode``; timing windows;
- :mod:`.training`: the same training step in each library;
- :mod:`.sampling`: DDIM-50 with one network driven by each library's loop.
- :mod:`.ten_minutes`: each peer trained for the ten-minute budget with its documented loop, sampled with its
  own scheduler, scored by the book's kit (``bench_ten_minutes.py --peers``).
"""
