"""prepare-data on archives made from the synthetic set: good, incomplete and tampered ones."""

import io
import tarfile

import pytest
from click.testing import CliRunner

from mtlora_deploy.cli.main import cli
from mtlora_deploy.errors import DataError
from mtlora_deploy.trainer.data import PascalLayout, find_ids_with_parts, make_synthetic_dataset, read_split
from mtlora_deploy.trainer.data.prepare import prepare_pascal_mt


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "PASCAL_MT", num_images=8, image_size=(32, 48))


def _archive(path, root, skip=(), extra=()):
    """A .tgz of ``root`` under a ``PASCAL_MT/`` top folder, without ``skip`` (relative paths), plus ``extra``."""
    with tarfile.open(path, "w:gz") as tar:
        for file in sorted(root.rglob("*")):
            rel = file.relative_to(root).as_posix()
            if rel not in skip:
                tar.add(file, arcname=f"PASCAL_MT/{rel}", recursive=False)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _nothing_left(tmp_path, output):
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.partial-")]


def test_good_archive_extracts_verifies_and_counts(tmp_path, synthetic_root):
    archive = _archive(tmp_path / "PASCAL_MT.tgz", synthetic_root)
    seen = []
    counts, already = prepare_pascal_mt(archive, tmp_path / "data", progress=lambda *a: seen.append(a))
    assert not already and (tmp_path / "data" / "JPEGImages").is_dir()
    layout = PascalLayout(synthetic_root)
    for row in counts:
        ids = read_split(layout, row.split)
        assert row.images == len(ids) and row.with_human_parts == len(find_ids_with_parts(layout, row.split, ids, None))
    assert sum(r.with_human_parts for r in counts) > 0
    assert {stage for stage, _, _ in seen} == {"extracting", "verifying"} and seen[-1][1] == seen[-1][2]
    result = CliRunner().invoke(cli, ["prepare-data", str(archive), "-o", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "already prepared and verified" in text and "with human parts" in text


def test_incomplete_archive_names_the_first_missing_file(tmp_path, synthetic_root):
    first_train = read_split(PascalLayout(synthetic_root), "train")[0]
    archive = _archive(tmp_path / "cut.tgz", synthetic_root, skip={f"sal_distill/{first_train}.png"})
    with pytest.raises(
        DataError,
        match=rf"cut\.tgz is incomplete: missing file sal_distill/{first_train}\.png "
        r"\(needed by",
    ):
        prepare_pascal_mt(archive, tmp_path / "data")
    _nothing_left(tmp_path, tmp_path / "data")
    archive = _archive(tmp_path / "nosplit.tgz", synthetic_root, skip={"ImageSets/Context/val.txt"})
    with pytest.raises(DataError, match=r"missing file ImageSets/Context/val\.txt"):
        prepare_pascal_mt(archive, tmp_path / "data")
    _nothing_left(tmp_path, tmp_path / "data")


@pytest.mark.parametrize(
    "name, kind, link",
    [
        ("PASCAL_MT/../../evil.txt", tarfile.REGTYPE, ""),
        ("/tmp/evil_i10.txt", tarfile.REGTYPE, ""),
        ("PASCAL_MT/JPEGImages/link.jpg", tarfile.SYMTYPE, "/etc/passwd"),
        ("PASCAL_MT/JPEGImages/up.jpg", tarfile.SYMTYPE, "../../../outside"),
        ("PASCAL_MT/dev", tarfile.CHRTYPE, ""),
    ],
)
def test_tampered_archives_are_refused_with_the_member_named(tmp_path, synthetic_root, name, kind, link):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    data = b"x" if kind == tarfile.REGTYPE else None
    info.size = len(data) if data else 0
    archive = _archive(tmp_path / "bad.tgz", synthetic_root, extra=[(info, data)])
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match=rf"archive member '{name}' .*refusing the archive"):
        prepare_pascal_mt(archive, tmp_path / "out" / "data")
    _nothing_left(tmp_path, tmp_path / "out" / "data")
    assert not (tmp_path / "evil.txt").exists()


def test_occupied_output_that_is_not_a_dataset_is_left_alone(tmp_path, synthetic_root):
    archive = _archive(tmp_path / "PASCAL_MT.tgz", synthetic_root)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"exists and is not a complete PASCAL-MT root .*missing folder"):
        prepare_pascal_mt(archive, tmp_path / "data")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["notes.txt"]
    with pytest.raises(DataError, match="could not be read"):
        prepare_pascal_mt(tmp_path / "data" / "notes.txt", tmp_path / "other")
