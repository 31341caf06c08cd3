"""Hardware tables: the shipped seed, validation errors naming file:line, merging, device keys, the writer,
and the one cached fit per set of table files."""

from __future__ import annotations

import pytest

from predictors import (
    DEFAULT_CLASSES,
    DEFAULT_RESOLUTION,
    SEED_TABLE,
    TABLE_COLUMNS,
    PredictorError,
    TableError,
    TableWriter,
    fit_predictors,
    fitted,
    load_table,
    measured_row,
    resolve_device,
)
from predictors.tables import row_key
from search_space import resolve_arch

HEADER = "device,precision,arch,latency_ms,status\n"


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_seed_table_matches_the_seed_facts():
    table = load_table()
    assert table.device_keys == ["ATLAS300", "RV1126", "T4", "Adreno650", "Hexagon698", "TDA4VM", "STPU"]
    ok = [r for r in table.rows if r.ok]
    failures = [r for r in table.rows if not r.ok]
    assert len(ok) == 31
    assert [(r.device, r.arch) for r in failures] == [("Hexagon698", "M1")]
    assert all(r.spec.resolution == 112 and r.spec.num_classes == 89 for r in table.rows)
    assert (DEFAULT_RESOLUTION, DEFAULT_CLASSES) == (112, 89)
    t4_m0 = next(r for r in table.rows_for("T4") if r.arch == "M0")
    assert t4_m0.latency_ms == pytest.approx(0.393848)
    assert t4_m0.spec == resolve_arch("M0", 112, 89)


def test_user_table_merges_with_seed_and_identical_duplicates_merge(tmp_path):
    path = write(tmp_path, HEADER + "T4,int8,A0,0.683414,ok\nt4,int8,N2,0.5,ok\nT4,int8,N2,0.5,ok\n")
    table = load_table([path])
    t4 = table.rows_for("T4")
    assert len(t4) == 5  # 4 seed rows + N2 once (A0 repeats the seed exactly; 't4' is the same device)
    assert {r.device for r in t4} == {"T4"}
    assert load_table([path], include_seed=False).device_keys == ["T4"]


def test_spec_strings_and_resolution_column(tmp_path):
    spec = "repvgg_d1-1-1-1_w0.25-0.25-0.25-0.25_g1_r64_c10"
    path = write(tmp_path, "device,precision,arch,latency_ms,status,resolution,classes,notes\n"
                           f"host-cpu,fp32,{spec},1.5,ok,64,,threads=1\n"
                           "host-cpu,fp32,N1,2.5,ok,96,10,\n"
                           "host-cpu,fp32,repvgg_d1-1-1-1_w0.5-0.5-0.5-0.5,2.0,ok,,,\n")
    rows = load_table([path], include_seed=False).rows
    assert rows[0].spec.to_string() == spec
    assert (rows[1].spec.resolution, rows[1].spec.num_classes) == (96, 10)
    assert (rows[2].spec.resolution, rows[2].spec.num_classes) == (112, 89)  # table defaults, not 224/1000


def test_precision_keys_when_a_device_has_several(tmp_path):
    path = write(tmp_path, HEADER + "host-cpu,fp32,N1,1.0,ok\nhost-cpu,int8,N1,0.7,ok\n")
    table = load_table([path])
    assert "host-cpu:fp32" in table.device_keys and "host-cpu:int8" in table.device_keys
    assert resolve_device(table, "HOST-CPU:INT8") == "host-cpu:int8"
    assert resolve_device(table, "t4") == "T4"
    assert resolve_device(table, "t4:int8") == "T4"
    with pytest.raises(PredictorError, match="several precisions"):
        resolve_device(table, "host-cpu")
    with pytest.raises(PredictorError, match=r"unknown device 'Jetson'.*known devices: ATLAS300"):
        resolve_device(table, "Jetson")


BAD_TABLES = [
    ("missing column", "device,precision,arch,latency_ms\nT4,int8,A0,1.0\n", r"t\.csv:1: missing column 'status'"),
    ("non-numeric", HEADER + "T4,int8,A0,fast,ok\n", r"t\.csv:2: latency_ms 'fast' is not a number"),
    ("negative", HEADER + "T4,int8,A0,1.0,ok\nT4,int8,N0,-1.0,ok\n", r"t\.csv:3: latency_ms -1.0 must be a positive"),
    ("zero", HEADER + "T4,int8,A0,0,ok\n", r"t\.csv:2: latency_ms 0 must be a positive"),
    ("nan", HEADER + "T4,int8,A0,nan,ok\n", r"t\.csv:2: latency_ms nan must be a positive"),
    ("ok without latency", HEADER + "T4,int8,A0,,ok\n", r"t\.csv:2: ok row without latency_ms"),
    ("unknown arch", HEADER + "T4,int8,Z9,1.0,ok\n", r"t\.csv:2: unknown or invalid arch 'Z9'"),
    ("bad spec", HEADER + "T4,int8,repvgg_d1-1_w1-1-1-1,1.0,ok\n", r"t\.csv:2: unknown or invalid arch"),
    ("unknown status", HEADER + "T4,int8,A0,1.0,crashed\n", r"t\.csv:2: unknown status 'crashed'"),
    ("conflict", HEADER + "X,int8,A0,1.0,ok\nX,int8,A0,1.2,ok\n", r"t\.csv:3: conflicting duplicate of .*t\.csv:2"),
    ("conflict status", HEADER + "X,int8,M1,1.0,ok\nX,int8,M1,,failure\n", r"t\.csv:3: conflicting duplicate"),
    ("empty", "", r"t\.csv:1: empty file"),
    ("header only", HEADER, r"t\.csv:2: empty file"),
    ("bad batch", "device,precision,arch,latency_ms,status,batch\nT4,int8,A0,1.0,ok,two\n",
     r"t\.csv:2: batch 'two' is not an integer"),
    ("resolution clash", "device,precision,arch,latency_ms,status,resolution\n"
                         "T4,int8,repvgg_d1-1-1-1_w1-1-1-1_g1_r64_c10,1.0,ok,96\n",
     r"t\.csv:2: arch .* says resolution 64 but the resolution column says 96"),
    ("too many cells", HEADER + "T4,int8,A0,1.0,ok,extra\n", r"t\.csv:2: more cells than header columns"),
]


@pytest.mark.parametrize(("case", "text", "pattern"), BAD_TABLES, ids=[c[0] for c in BAD_TABLES])
def test_malformed_tables_name_file_and_line(tmp_path, case, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(TableError, match=pattern):
        load_table([path], include_seed=False)


def test_conflict_with_the_seed_names_both_files(tmp_path):
    path = write(tmp_path, HEADER + "T4,int8,A0,0.9,ok\n")
    with pytest.raises(TableError, match=r"t\.csv:2: conflicting duplicate of .*seed_latency\.csv:11"):
        load_table([path])


def test_missing_file_and_no_table(tmp_path):
    with pytest.raises(TableError, match="no such file"):
        load_table([tmp_path / "absent.csv"])
    with pytest.raises(TableError, match="no hardware table given"):
        load_table([], include_seed=False)


def test_shipped_seed_is_the_package_copy():
    assert SEED_TABLE.name == "seed_latency.csv"
    assert SEED_TABLE.parent.name == "resources" and SEED_TABLE.parent.parent.name == "predictors"
    assert (SEED_TABLE.parent / "PROVENANCE.md").is_file()


# -- writing ---------------------------------------------------------------------------------------------

def test_table_columns_are_the_readers_columns():
    assert TABLE_COLUMNS == ("device", "precision", "arch", "latency_ms", "status", "batch", "resolution",
                             "classes", "notes")


def test_writer_round_trips_through_the_reader(tmp_path):
    path = tmp_path / "new.csv"
    spec = resolve_arch("repvgg_d1-2-1-1_w0.5-0.25-0.25-0.25", 48, 7)
    writer = TableWriter.open(path)
    assert writer.rows == [] and not path.exists()  # opening writes nothing
    writer.put(measured_row("host-cpu", "fp32", spec, 1.23456789, "threads=1;clock=cpu"))
    writer.put(measured_row("host-cpu", "int8", spec, 0.5))
    (fp32, int8) = load_table([path], include_seed=False).rows
    assert (fp32.spec, fp32.latency_ms, fp32.notes) == (spec, 1.234568, "threads=1;clock=cpu")
    assert (int8.precision, int8.latency_ms, int8.batch) == ("int8", 0.5, 1)
    header = path.read_text().splitlines()[0]
    assert header == ",".join(TABLE_COLUMNS)
    assert [p.name for p in tmp_path.iterdir()] == ["new.csv"]  # atomic: no temp file left


def test_writer_replaces_the_same_measurement_and_keeps_the_rest(tmp_path):
    path = write(tmp_path, "device,precision,arch,latency_ms,status,resolution,classes,owner\n"
                           "T4,int8,A0,0.683414,ok,,,seed\nhost-cpu,fp32,N1,2.0,ok,32,10,me\n")
    writer = TableWriter.open(path)
    n1 = resolve_arch("N1", 32, 10)
    assert writer.has("HOST-CPU", "fp32", n1) and not writer.has("host-cpu", "int8", n1)
    assert not writer.has("host-cpu", "fp32", n1.replace(resolution=64))
    writer.put(measured_row("Host-CPU", "fp32", n1, 1.5))  # the preset row and its spec string are one row
    rows = load_table([path], include_seed=False).rows
    assert [(r.device, r.arch, r.latency_ms) for r in rows] == [("T4", "A0", 0.683414),
                                                                 ("Host-CPU", n1.to_string(), 1.5)]
    assert path.read_text().splitlines()[0].endswith(",owner")  # an extra column is kept …
    assert path.read_text().splitlines()[1].endswith(",seed")  # … with its cells


def test_writer_refuses_what_the_reader_would_not_read(tmp_path):
    path = write(tmp_path, HEADER + "X,int8,A0,1.0,ok\nX,int8,A0,1.2,ok\n")
    with pytest.raises(TableError, match=r"t\.csv:3: conflicting duplicate"):
        TableWriter.open(path)
    writer = TableWriter.open(write(tmp_path, HEADER, name="ok.csv"))  # a header alone is an empty table
    with pytest.raises(TableError, match=r"new row: latency_ms -1\.0 must be a positive"):
        writer.put({"device": "X", "precision": "fp32", "arch": "A0", "latency_ms": -1.0, "status": "ok"})
    assert (tmp_path / "ok.csv").read_text() == HEADER
    with pytest.raises(TableError, match="is a folder"):
        TableWriter.open(tmp_path)


def test_row_key_is_canonical():
    a0 = resolve_arch("A0", 112, 89)
    assert row_key("T4", "INT8", a0) == row_key("t4", "int8", resolve_arch(a0.to_string()))
    assert row_key("T4", "int8", a0) != row_key("T4", "int8", a0, batch=8)


# -- one cached fit ------------------------------------------------------------------------------------------

def test_fitted_is_cached_on_the_files_and_refits_when_they_change(tmp_path):
    path = write(tmp_path, HEADER + "sim,fp32,N1,2.0,ok\nsim,fp32,A0,3.0,ok\nsim,fp32,M0,5.0,ok\n")
    first = fitted([path])
    assert fitted([str(path)]) is first and fitted([tmp_path / "." / "t.csv"]) is first
    assert set(first.predictors) == set(fit_predictors(load_table([path])))
    assert first.select(["SIM"])["sim"] is first.predictors["sim"]
    assert fitted([path], include_seed=False) is not first
    with pytest.raises(TypeError):
        first.predictors["T4"] = first.predictors["sim"]  # shared between callers: read-only
    write(tmp_path, HEADER + "sim,fp32,N1,2.0,ok\nsim,fp32,A0,3.0,ok\nsim,fp32,M0,9.25,ok\n")  # a new size
    second = fitted([path])
    assert second is not first
    assert [r.latency_ms for r in second.table.rows_for("sim")] == [2.0, 3.0, 9.25]
    with pytest.raises(PredictorError, match="unknown device 'Jetson'"):
        second.select(["Jetson"])
    with pytest.raises(TableError, match="no such file"):
        fitted([tmp_path / "absent.csv"])
