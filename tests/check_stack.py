"""First step of `make test`: torch, torchaudio and the transforms slidead uses load together.

A torchaudio wheel built against another torch fails deep in a test collection with an
``undefined symbol`` error; this says it in one line, naming both versions, before pytest runs.
"""

from __future__ import annotations

import sys
from importlib import metadata


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> int:
    pair = f"torch {_version('torch')} with torchaudio {_version('torchaudio')}"
    try:
        import torch
        import torchaudio

        # the two pieces slidead.core.features.LogMel is built from
        spec = torchaudio.transforms.Spectrogram(n_fft=1024, hop_length=512, power=None, center=True)
        fb = torchaudio.functional.melscale_fbanks(513, 0.0, 8000.0, 128, 16000, norm="slaney", mel_scale="slaney")
        z = spec(torch.zeros(1, 16000))
        mel = fb.T @ (z * z.conj()).real
        if tuple(mel.shape[-2:]) != (128, 32):
            raise RuntimeError(f"the log-mel pieces gave shape {tuple(mel.shape)}")
        import soundfile  # noqa: F401  (the WAV reader)
    except Exception as exc:  # one line for a person, whatever broke
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"slidead: {pair} do not load together ({first}); reinstall from uv.lock with `make install`.",
            file=sys.stderr,
        )
        return 1
    print(f"slidead: {pair} load together; mel transform ok.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
