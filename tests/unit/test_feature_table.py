"""The offline feature table read in a child process: its rows, and one-line errors for a bad file."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.errors import ArtifactError
from app.features.table import OfflineTable


class TestOfflineTable:
    def test_rows_by_user_with_plain_values(self, tmp_path):
        """The child process hands back user_id -> {column: value}, with nulls as None."""
        path = tmp_path / "features.parquet"
        pq.write_table(pa.table({"user_id": ["u1", "u2"], "age": [31, None], "country": ["DE", "FR"]}), path)
        table = OfflineTable.load(path)
        assert table.rows == {"u1": {"age": 31, "country": "DE"}, "u2": {"age": None, "country": "FR"}}
        assert table.columns == ("age", "country")

    @pytest.mark.parametrize("isolated", [True, False])
    def test_a_file_that_is_not_parquet_is_one_artifact_error(self, tmp_path, isolated):
        """A corrupt table fails with an ArtifactError naming the file, in or out of the child process."""
        path = tmp_path / "features.parquet"
        path.write_bytes(b"not parquet at all")
        with pytest.raises(ArtifactError, match="cannot be read") as caught:
            OfflineTable.load(path, isolated=isolated)
        assert str(path) in caught.value.message and "\n" not in caught.value.message

    def test_a_missing_file_is_an_artifact_error(self, tmp_path):
        """A table path that does not exist fails with an ArtifactError, not a traceback from the child."""
        with pytest.raises(ArtifactError, match="cannot be read"):
            OfflineTable.load(tmp_path / "absent.parquet")

    def test_a_table_without_user_id_is_refused(self, tmp_path):
        """A table without the user_id key column is refused by name."""
        path = tmp_path / "features.parquet"
        pq.write_table(pa.table({"age": [1]}), path)
        with pytest.raises(ArtifactError, match="no user_id column"):
            OfflineTable.load(path)
