"""The node uploader: what a decode node uploads itself, what it hands back, how it is paced."""

from __future__ import annotations

import pickle

import pytest
from _mock_api import Mock, ok, status

from seeknetic_prep.api import uploader as up
from seeknetic_prep.api.client import TokenBucket
from seeknetic_prep.api.uploader import NodeUploader

BODIES = [("embedding", "r1-e", b'{"video_input": 1}'), ("tagging", "r1-t", b'{"video_input": 2}'),
          ("embedding", "r2-e", b'{"video_input": 3}')]


def _uploader(m: Mock, monkeypatch: pytest.MonkeyPatch, qps: float | None = None) -> NodeUploader:
    """An uploader whose process-wide client is ``m``'s (over a MockTransport, fake clock)."""
    latest = up._Latest()
    m.engine.rate = latest
    config = m.client.worker_config()
    monkeypatch.setitem(up._clients, config, (m.client, latest))
    return NodeUploader(config, TokenBucket(qps, clock=m.fake.clock) if qps else None)


def test_uploads_each_body_paced_by_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Mock(ok({"r2_keys": {"video_input": "k"}}))
    done, left = _uploader(m, monkeypatch, qps=4.0).upload(BODIES)
    assert [(svc, rid) for svc, rid, _ in done] == [("embedding", "r1-e"), ("tagging", "r1-t"),
                                                     ("embedding", "r2-e")]
    assert left == () and [r.request_id for r in m.seen] == ["r1-e", "r1-t", "r2-e"]
    assert m.fake.waits == pytest.approx([0.25, 0.25])  # the shared bucket, not its own


def test_a_failed_body_hands_it_and_every_later_one_back_untried(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Mock(ok({"r2_keys": {"video_input": "k"}}), status(422), ok({"r2_keys": {"video_input": "k"}}))
    uploader = _uploader(m, monkeypatch)
    done, left = uploader.upload(BODIES)
    assert [rid for _, rid, _ in done] == ["r1-e"] and left == tuple(BODIES[1:])
    assert len(m.seen) == 2 and uploader.gave_up  # the third was never tried
    assert uploader.upload(BODIES[:1]) == ((), tuple(BODIES[:1])) and len(m.seen) == 2
    fresh = pickle.loads(pickle.dumps(uploader))  # what an engine ships with the next task
    assert not fresh.gave_up and fresh.config == uploader.config
    assert m.client.worker_config().api_key not in repr(fresh.config)
