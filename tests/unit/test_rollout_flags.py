"""Flags files: parsing, attribute targeting, and reloading with a last good fallback."""

from __future__ import annotations

import json
import os

import pytest

from app.model.decoder import Decoded
from app.rollout.bucketing import normalized_bucket
from app.rollout.flags import FlagsError, parse_flags
from app.rollout.watch import FlagsWatcher
from app.telemetry.metrics import Metrics

YAML = """
flags:
  - name: gbm-v3
    version: v3
    percent: 10
    match:
      country: [DE, FR]
      cohort: beta
  - name: old-v1
    version: v1
    percent: 100
    enabled: false
"""


def req(user="u-1", features=None, attributes=None):
    return Decoded(user, features or {"device": "ios"}, None, attributes)


class TestParse:
    def test_yaml_and_json_agree(self):
        """The same document as YAML and JSON gives the same enabled flags."""
        doc = {"flags": [{"name": "gbm-v3", "version": "v3", "percent": 10, "match": {"country": ["DE", "FR"]}}]}
        assert parse_flags(json.dumps(doc), ".json") == parse_flags(
            "flags:\n  - {name: gbm-v3, version: v3, percent: 10, match: {country: [DE, FR]}}\n", ".yaml"
        )

    def test_disabled_flags_are_dropped(self):
        """``enabled: false`` keeps a flag in the file but out of routing."""
        assert [f.name for f in parse_flags(YAML, ".yml")] == ["gbm-v3"]

    def test_empty_document_means_no_flags(self):
        """An empty YAML file or ``{"flags": []}`` turns every rollout off."""
        assert parse_flags("", ".yaml") == ()
        assert parse_flags('{"flags": []}') == ()

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("{not json", "not valid JSON"),
            ('{"flags": [{"name": "a", "version": "v3", "percent": 101}]}', "percent"),
            ('{"flags": [{"name": "a", "version": "v3", "percent": "10"}]}', "percent"),
            ('{"flags": [{"name": "a", "version": "../v3", "percent": 10}]}', "version"),
            ('{"flags": [{"name": "a", "version": "v3", "percent": 10, "colour": 1}]}', "colour"),
            ('{"flags": [{"name": "a", "version": "v3", "percent": 1}, {"name": "a", "version": "v1", "percent": 1}]}',
             "duplicate"),
            ('{"flags": [{"name": "a", "version": "v3", "percent": 10, "match": {"country": []}}]}', "empty list"),
            ('{"flag": []}', "flag"),
        ],
    )  # fmt: skip
    def test_invalid_documents_say_why(self, text, fragment):
        """Every kind of bad file is refused with a message naming the problem."""
        with pytest.raises(FlagsError) as info:
            parse_flags(text)
        assert fragment in info.value.message

    @pytest.mark.parametrize("suffix", [".json", ".yaml"])
    def test_deeply_nested_document_is_refused_not_raised(self, suffix):
        """A file of 100,000 ``[`` overflows both parsers' recursion: refused like any bad file, not a 500."""
        with pytest.raises(FlagsError) as info:
            parse_flags("[" * 100_000, suffix)
        assert "nested too deeply" in info.value.message


class TestTargeting:
    def flag(self, match=None, percent=100):
        doc = {"flags": [{"name": "f", "version": "v3", "percent": percent, "match": match or {}}]}
        return parse_flags(json.dumps(doc))[0]

    def test_attributes_object_and_request_features(self):
        """Attributes come from the ``attributes`` object first, then request features by name."""
        flag = self.flag({"country": ["DE", "FR"], "device": "ios"})
        assert flag.serves(req(attributes={"country": "DE"}))
        assert not flag.serves(req(attributes={"country": "US"}))
        assert not flag.serves(req(features={"device": "web"}, attributes={"country": "DE"}))
        assert not flag.serves(req())  # no country at all
        assert flag.serves(req(features={"device": "web"}, attributes={"country": "FR", "device": "ios"}))

    def test_values_compare_as_text(self):
        """``cohort: 3`` matches 3 and "3"; booleans match true/false."""
        flag = self.flag({"cohort": 3, "first_purchase": True})
        assert flag.serves(req(features={"first_purchase": True}, attributes={"cohort": "3"}))
        assert flag.serves(req(features={"first_purchase": True}, attributes={"cohort": 3}))
        assert not flag.serves(req(features={"first_purchase": False}, attributes={"cohort": 3}))

    def test_percentage_applies_within_the_target(self):
        """Only matching users are bucketed, by the flag's own name."""
        flag = self.flag({"country": "DE"}, percent=30)
        users = [f"u-{i}" for i in range(3000)]
        chosen = [u for u in users if flag.serves(req(u, attributes={"country": "DE"}))]
        assert chosen == [u for u in users if normalized_bucket(u, "f") <= 30]

    def test_no_user_no_rollout(self):
        """A request without a user id is never in a rollout."""
        assert not self.flag().serves(req(user=None))


class TestWatcher:
    def write(self, path, doc):
        path.write_text(json.dumps(doc))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a visible change on coarse clocks

    def test_reload_on_change_and_keep_last_good(self, tmp_path):
        """A change is picked up; a bad file keeps the last good flags, is counted, and a fix recovers."""
        path = tmp_path / "flags.json"
        self.write(path, {"flags": [{"name": "a", "version": "v3", "percent": 10}]})
        metrics = Metrics()
        watcher = FlagsWatcher(path, metrics)
        assert [f.percent for f in watcher.load_initial()] == [10]
        assert watcher.check() is None  # unchanged: nothing read
        self.write(path, {"flags": [{"name": "a", "version": "v3", "percent": 20}]})
        assert [f.percent for f in watcher.check() or ()] == [20]
        path.write_text("{broken")
        assert watcher.check() is None
        assert [f.percent for f in watcher.flags] == [20]
        assert watcher.error is not None and "not valid JSON" in watcher.error
        assert metrics.flags_reload_errors._value.get() == 1
        assert watcher.check() is None  # the same bad file is not counted twice
        assert metrics.flags_reload_errors._value.get() == 1
        self.write(path, {"flags": []})
        assert watcher.check() == ()
        assert watcher.error is None

    def test_deleted_file_keeps_last_good(self, tmp_path):
        """Removing the file is an error, not "no flags" (write ``flags: []`` to turn rollouts off)."""
        path = tmp_path / "flags.yaml"
        path.write_text(YAML)
        watcher = FlagsWatcher(path, Metrics())
        watcher.load_initial()
        path.unlink()
        assert watcher.check() is None
        assert [f.name for f in watcher.flags] == ["gbm-v3"]

    def test_missing_file_at_start_fails(self, tmp_path):
        """With no last good flags, a missing file at start-up is an error."""
        with pytest.raises(FlagsError):
            FlagsWatcher(tmp_path / "nope.json", Metrics()).load_initial()
