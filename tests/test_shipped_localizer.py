"""The shipped localizer (models/weights/localizer/) loads, is served, and reproduces its card.

Its card records, besides training, a small evaluation on our simulator
(:data:`livespt.models.ddpm.evaluate.CARD_CHECK`: fixed frames, samples and seeds);
recomputing it here shows the file is the one the card describes, with the same
behaviour. The full evaluation, on deeptrack's frames as well, is
``docs/localization_report.md`` (``make localizer-report``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from livespt.models.ddpm.evaluate import CARD_CHECK, card_check
from livespt.models.ddpm.localizer import load, read_card, shipped_localizer
from livespt.models.vit.weights import sha256
from livespt.server.client import LiveSptClient
from livespt.server.service.app import EmbeddedServer, ServerOptions

SHIPPED = shipped_localizer()


def test_a_localizer_is_shipped_with_its_card() -> None:
    assert SHIPPED is not None, "no localizer under models/weights/localizer/"
    card = read_card(SHIPPED)
    assert card["sha256"] == sha256(SHIPPED)
    assert card["metrics"]["check"]["settings"] == CARD_CHECK
    assert card["command"].startswith("livespt train localizer")


def test_the_shipped_localizer_reproduces_its_card() -> None:
    assert SHIPPED is not None
    loc = load(SHIPPED)
    want = loc.card["metrics"]["check"]
    got = card_check(loc)
    # Same frames, seeds and samples: equal but for float sums that depend on the number
    # of threads, which can move a peak across the threshold (one emitter in ~110 is
    # 0.01 of precision or recall).
    assert got["precision"] == pytest.approx(want["precision"], abs=0.02)
    assert got["recall"] == pytest.approx(want["recall"], abs=0.02)
    assert got["rmse_px"] == pytest.approx(want["rmse_px"], rel=0.05)
    assert got["z_score_sd"] == pytest.approx(want["z_score_sd"], rel=0.05)


def test_serve_holds_the_shipped_localizer_by_default(tmp_path: Path) -> None:
    assert SHIPPED is not None
    with EmbeddedServer(ServerOptions(port=0, out_root=tmp_path, device="cpu", models=())) as srv:
        with LiveSptClient(srv.target) as client:
            models = [m for m in client.info().models if m.kind == "localizer"]
    assert [m.name for m in models] == [read_card(SHIPPED)["name"]]
    assert models[0].sha256 == sha256(SHIPPED)
