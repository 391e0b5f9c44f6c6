"""`adapterkit train --train-file`: data through HF `datasets` (Parquet, JSONL, JSON, CSV/TSV with or without a
header, a save_to_disk folder), capped reads that do not load the whole file, and bad data of each kind as one
line `adapterkit: error: ...` with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from adapterkit.cli import main
from adapterkit.cli.errors import DataError
from adapterkit.cli.tables import read_rows
from cli_helpers import report, tiny_checkpoint

ROWS = [{"text": f"the {w} was {'great' if i % 2 else 'awful'}", "label": ["neg", "pos"][i % 2]}
        for i, w in enumerate(["cat", "film", "book", "meal", "song", "trip", "game", "park"] * 2)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def _parquet(path):
    import pandas as pd
    pd.DataFrame(ROWS).to_parquet(path)


def _jsonl(path):
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))


def _json_array(path):
    path.write_text(json.dumps(ROWS))


def _disk(path):
    import datasets
    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))


def _disk_dict(path):
    import datasets
    datasets.DatasetDict(train=datasets.Dataset.from_list(ROWS),
                         validation=datasets.Dataset.from_list(ROWS[:6])).save_to_disk(str(path))


def _headerless_tsv(path):
    path.write_text("".join(f"{i}\t{r['label']}\t{r['text']}\n" for i, r in enumerate(ROWS)))


FORMATS = {  # name: (file name, writer, extra arguments, dev examples)
    "parquet": ("d.parquet", _parquet, [], 16),
    "jsonl": ("d.jsonl", _jsonl, [], 16),
    "json array": ("d.json", _json_array, [], 16),
    "save_to_disk": ("disk", _disk, [], 16),
    "save_to_disk dict (its validation split)": ("diskdict", _disk_dict, [], 6),
    "headerless tsv by index": ("d.tsv", _headerless_tsv, ["--no-header", "--text-column", "2", "--label-column",
                                                           "1"], 16),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_format_trains_for_2_steps(ckpt, tmp_path, fmt):
    name, writer, extra, n_dev = FORMATS[fmt]
    writer(tmp_path / name)
    assert main(["train", "--model", str(ckpt), "--train-file", str(tmp_path / name), *extra, "--max-steps", "2",
                 "--batch-size", "4", "--no-plot", "--output-dir", str(tmp_path / "run")]) == 0
    got = report(tmp_path / "run")
    assert got["steps"] == 2 and got["train_examples"] == 16 and got["dev_examples"] == n_dev
    assert {"accuracy", "f1"} <= set(got["metrics"])
    head = json.loads((tmp_path / "run" / "adapter" / "head_config.json").read_text())
    assert head["config"]["label2id"] == {"neg": 0, "pos": 1}


def test_column_index_on_a_file_with_a_header(tmp_path):
    from adapterkit.cli.data import load_table
    (tmp_path / "d.csv").write_text("id,sentence,y\n1,hello there,a\n2,good bye,b\n")
    ds = load_table(tmp_path / "d.csv", text_column="1", label_column="y")  # a name: the file has a header
    assert ds.texts == ["hello there", "good bye"] and ds.label_names == ["a", "b"]
    ds = load_table(tmp_path / "d.csv", text_column="sentence", label_column="2")
    assert ds.texts == ["hello there", "good bye"] and ds.label_names == ["a", "b"]


def test_indices_alone_read_a_headerless_file(tmp_path):
    """CoLA-style: `--text-column 3 --label-column 1` without --no-header keeps row 1 as data; a file that does
    have a header row, given indices only, is refused with a way out rather than learning a class "label"."""
    from adapterkit.cli.data import load_table
    (tmp_path / "cola.tsv").write_text("".join(f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\tsentence {i}\n"
                                               for i in range(6)))
    ds = load_table(tmp_path / "cola.tsv", text_column="3", label_column="1")
    assert len(ds) == 6 and ds.texts[0] == "sentence 0" and ds.labels == [0, 1, 0, 1, 0, 1]
    (tmp_path / "h.tsv").write_text("id\tlabel\tmark\tsentence\n" + "".join(
        f"{i}\t{i % 2}\t\tsentence {i}\n" for i in range(6)))
    with pytest.raises(DataError, match="h.tsv: row 1 looks like a header .*'label'.*--no-header"):
        load_table(tmp_path / "h.tsv", text_column="3", label_column="1")
    assert len(load_table(tmp_path / "h.tsv", text_column="sentence", label_column="1")) == 6


def test_a_capped_read_stops_early(tmp_path):
    """--max-train-samples reads the first rows only: a broken row far down is never reached (streamed)."""
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(25_000)) + "x,1,2,3\n")
    assert len(read_rows(path, limit=16)) == 16
    with pytest.raises(DataError, match="big.csv: cannot be read as CSV"):
        read_rows(path)


def test_max_train_samples_reads_only_the_first_rows(ckpt, tmp_path):
    """The command with --max-train-samples / --max-eval-samples on a file whose row 25,001 is broken: it trains."""
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(25_000)) + "x,1,2,3\n")
    args = ["train", "--model", str(ckpt), "--train-file", str(path), "--max-steps", "2", "--batch-size", "4",
            "--no-plot", "--output-dir", str(tmp_path / "run")]
    assert main([*args, "--max-train-samples", "16", "--max-eval-samples", "8"]) == 0
    assert report(tmp_path / "run")["train_examples"] == 16
    assert main(args) == 2  # uncapped, the broken row is reached


def _write_bad(tmp_path):
    import datasets
    import pandas as pd
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    pd.DataFrame(ROWS).to_parquet(tmp_path / "ok.parquet")
    data = (tmp_path / "ok.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[:len(data) // 2])
    pd.DataFrame({"sentence": ["a", "b"], "label": [0, 1]}).to_parquet(tmp_path / "nocol.parquet")
    (tmp_path / "bad.jsonl").write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    (tmp_path / "ragged.tsv").write_text("text\tlabel\na\t1\nb\t0\textra\n")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "broken"))
    for f in (tmp_path / "broken").glob("*.arrow"):
        f.write_bytes(b"garbage")
    datasets.DatasetDict(test=datasets.Dataset.from_list(ROWS)).save_to_disk(str(tmp_path / "notrain"))
    (tmp_path / "d.xlsx").write_text("x")


BAD = {  # case: (train file, extra arguments, fragments of the one line)
    "missing file": ("nothere.csv", [], ["nothere.csv", "file not found"]),
    "junk parquet": ("junk.parquet", [], ["junk.parquet", "cannot be read as PARQUET"]),
    "truncated parquet": ("cut.parquet", [], ["cut.parquet", "cannot be read as PARQUET"]),
    "parquet without the column": ("nocol.parquet", [], ["nocol.parquet", "text column 'text' not found",
                                                         "label, sentence"]),
    "bad jsonl line": ("bad.jsonl", [], ["bad.jsonl", "cannot be read as JSON Lines"]),
    "empty jsonl": ("empty.jsonl", [], ["empty.jsonl", "empty"]),
    "empty csv": ("empty.csv", [], ["empty.csv", "empty"]),
    "header-only csv": ("header.csv", [], ["header.csv", "no data rows"]),
    "ragged tsv": ("ragged.tsv", [], ["ragged.tsv", "cannot be read as TSV"]),
    "column index out of range": ("ok.parquet", ["--text-column", "7"], ["ok.parquet", "index 7", "0 to 1"]),
    "folder that is not save_to_disk": ("plain", [], ["plain", "not a datasets.save_to_disk folder"]),
    "broken save_to_disk": ("broken", [], ["broken", "cannot be read as a save_to_disk folder"]),
    "save_to_disk without a train split": ("notrain", [], ["notrain", "no 'train' split", "test"]),
    "unsupported extension": ("d.xlsx", [], ["d.xlsx", "unsupported format .xlsx"]),
    "hub id not in the cache": ("someorg/not-cached", [], ["someorg/not-cached", "not a Hub dataset in the local "
                                                          "cache", "nothing is downloaded"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_one_line_exit_2(ckpt, tmp_path, capsys, case):
    _write_bad(tmp_path)
    name, extra, fragments = BAD[case]
    source = name if "/" in name else str(tmp_path / name)
    capsys.readouterr()
    rc = main(["train", "--model", str(ckpt), "--train-file", source, *extra, "--max-steps", "1", "--no-plot",
               "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("adapterkit: error: "), err[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "run" / "adapter").exists()


@pytest.mark.parametrize("name", ["bad.jsonl"])  # a bad Parquet file: test_cli.py
def test_bad_file_in_a_fresh_process_prints_only_the_one_line(tmp_path, name):
    """datasets' own loggers (set up at import) add no lines of their own."""
    _write_bad(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "adapterkit", "train", "--train-file", str(tmp_path / name)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and name in lines[0], proc.stderr[-2000:]


def test_hub_dataset_id_from_the_local_cache(ckpt, tmp_path, monkeypatch):
    """A Hub id that the datasets cache holds trains offline, nothing downloaded. The cache is written by datasets'
    own Parquet builder in the layout a Hub load leaves (<name>/default/<version>/<commit>/); a namespaced id
    ("org/name") is not built here: the builder refuses local files for a repo id."""
    import datasets
    import pandas as pd
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.parquet.parquet import Parquet
    pd.DataFrame(ROWS).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(ROWS[:6]).to_parquet(tmp_path / "validation.parquet")
    files = DataFilesDict.from_local_or_remote({"train": [str(tmp_path / "train.parquet")],
                                                "validation": [str(tmp_path / "validation.parquet")]},
                                               base_path=str(tmp_path))
    Parquet(cache_dir=str(tmp_path / "cache"), dataset_name="tiny_reviews", config_name="default",
            config_id="default", hash="5f1c0a7e9b", data_files=files).download_and_prepare()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    (tmp_path / "train.parquet").unlink()  # only the cache is read
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", str(ckpt), "--train-file", "tiny_reviews", "--max-steps", "2", "--batch-size",
                 "4", "--no-plot", "--output-dir", str(tmp_path / "run")]) == 0
    got = report(tmp_path / "run")
    assert got["steps"] == 2 and got["train_examples"] == 16 and got["dev_examples"] == 6
