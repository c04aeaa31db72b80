"""examples/local_docs.py end to end, as a user runs it (a subprocess, a real SQLite file, the real MiniLM bundle):
index, re-index after changes, a kill and a Ctrl-C mid-run followed by a resume, search."""
from __future__ import annotations

import re
import runpy
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from docs_corpus import DOCUMENTS, QUESTIONS

from edge_embed import Embedder

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "local_docs.py"
FILLER = "The committee met again on Tuesday and agreed to revisit the matter at a later date. "


def run(*args, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def embedded(stdout: str) -> set[str]:
    return {Path(m).name for m in re.findall(r"^embedded (.+) \(\d+ chunks\)$", stdout, flags=re.M)}


def top_file(db: Path, bundle: Path, question: str) -> str:
    first = run("search", question, "--db", db, "--bundle", bundle, "-k", "3").stdout.splitlines()[0]
    match = re.match(r"1\. (-?[\d.]+)  (.+)  \[(\d+):(\d+)\]  ", first)
    assert match, first
    return Path(match.group(2)).name


def write_folder(folder: Path, names: list[str], filler_sentences: int = 12) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        text = DOCUMENTS.get(name, f"A note numbered {name}.")
        (folder / f"{name}.md").write_text(f"# {name}\n\n{text}\n\n" + FILLER * filler_sentences, encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("chunking", ["late", "naive"])
def test_reindex_embeds_only_new_and_changed_files_and_search_finds_them(minilm_bundle, tmp_path, chunking):
    folder, db = tmp_path / "docs", tmp_path / "docs.sqlite"
    write_folder(folder, [name for name in DOCUMENTS if name != "whales"])
    options = ["--db", db, "--bundle", minilm_bundle, "--chunking", chunking]
    first = run("index", folder, *options)
    assert embedded(first.stdout) == {f"{name}.md" for name in DOCUMENTS if name != "whales"}
    assert "[index] 7/7 files" in first.stderr  # the progress line
    assert embedded(run("index", folder, *options).stdout) == set()  # nothing changed: nothing embedded

    (folder / "tax.md").write_text("Income tax returns are due on the last day of January. " + FILLER)  # changed
    (folder / "volcano.md").unlink()  # deleted
    write_folder(folder, ["whales"])  # added
    (folder / "bread.md").touch()  # a newer mtime, the same bytes: not embedded again
    again = run("index", folder, *options)
    assert embedded(again.stdout) == {"tax.md", "whales.md"}
    assert re.findall(r"^dropped (.+)$", again.stdout, flags=re.M) == [str(folder.resolve() / "volcano.md")]

    with sqlite3.connect(db) as con:
        paths = [Path(p).name for (p,) in con.execute("SELECT path FROM documents ORDER BY path")]
        assert paths == sorted(f"{name}.md" for name in DOCUMENTS if name != "volcano")
        orphans = con.execute("SELECT count(*) FROM chunks WHERE document_id NOT IN (SELECT id FROM documents)")
        assert orphans.fetchone()[0] == 0
        spans = con.execute("SELECT c.start, c.end, c.text, length(c.bits), length(c.int8) FROM chunks c JOIN "
                            "documents d ON d.id = c.document_id WHERE d.path LIKE '%tax.md'").fetchall()
    text = (folder / "tax.md").read_text()
    assert [(start, end) for start, end, *_ in spans][0][0] == 0 and spans[-1][1] == len(text.rstrip())
    assert all(chunk == text[start:end] and bits == 384 // 8 and codes == 384 for start, end, chunk, bits, codes
               in spans)
    for question, name in list(QUESTIONS.items())[:3] + [("what is the biggest animal in the ocean?", "whales")]:
        if name != "volcano":
            assert top_file(db, minilm_bundle, question) == f"{name}.md", question


def test_search_scores_are_the_float_cosines_within_int8_error(minilm_bundle, tmp_path):
    folder, db = tmp_path / "docs", tmp_path / "docs.sqlite"
    write_folder(folder, list(DOCUMENTS), filler_sentences=0)  # one chunk a file: the file's whole text
    run("index", folder, "--db", db, "--bundle", minilm_bundle, "--precision", "fp32", "--chunking", "naive")
    question = "how do I recover my login credentials?"
    lines = run("search", question, "--db", db, "--bundle", minilm_bundle, "--precision", "fp32", "-k", "8")
    found = [re.match(r"(\d+)\. (-?[\d.]+)  (.+)  \[(\d+):(\d+)\]  ", line).groups() for line in
             lines.stdout.splitlines()]
    assert [int(rank) for rank, *_ in found] == list(range(1, 9))
    # the expected scores: the float cosines of the question and each file's text, straight from the model
    model = Embedder(minilm_bundle, precision="fp32")
    query = model.embed([question], task="search_query")[0]
    texts = [(folder / Path(path).name).read_text().strip() for _, _, path, _, _ in found]
    cosines = model.embed(texts, task="search_document") @ query
    scores = np.array([float(score) for _, score, *_ in found])
    assert np.abs(scores - cosines).max() <= 0.005  # int8 codes: 256 steps over each dimension's range (measured 5e-4)
    assert Path(found[0][2]).name == "password.md" and list(scores) == sorted(scores, reverse=True)


def stop_mid_run(folder: Path, db: Path, bundle: Path, how: signal.Signals) -> tuple[int, set[str], str]:
    """Start an index run, send `how` once two files are committed; (exit code, files it reported, stderr)."""
    process = subprocess.Popen([sys.executable, str(SCRIPT), "index", str(folder), "--db", str(db), "--bundle",
                                str(bundle), "--precision", "fp32"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        while len(lines) < 2:
            line = process.stdout.readline()
            assert line, f"the run ended before two files were in: {process.stderr.read()}"
            lines.append(line) if line.startswith("embedded ") else None
        process.send_signal(how)
        # read on through the same buffered file (communicate() would skip what readline() has buffered)
        rest, errors = process.stdout.read(), process.stderr.read()
        process.wait(timeout=120)
    finally:
        process.kill()
    return process.returncode, embedded("".join(lines) + rest), errors


def read_index(db: Path) -> dict[str, tuple]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT d.path, d.sha256, c.start, c.end, c.bits, c.int8 FROM documents d JOIN chunks c "
                           "ON c.document_id = d.id ORDER BY d.path, c.start").fetchall()
    out: dict[str, list] = {}
    for path, digest, start, end, bits, codes in rows:
        out.setdefault(Path(path).name, []).append((digest, start, end, bits, codes))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_a_run_stopped_mid_way_resumes_where_it_stopped(minilm_bundle, tmp_path, how):
    folder = tmp_path / "many"
    names = [f"note{i:02d}" for i in range(12)]
    write_folder(folder, names, filler_sentences=20)  # 2 chunks a file, 5 files a model call
    code, before, errors = stop_mid_run(folder, tmp_path / "docs.sqlite", minilm_bundle, how)
    if how == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:  # Ctrl-C: stops between model calls, says how to resume
        assert code == 130 and "run the same command again to resume" in errors, errors
    assert 2 <= len(before) < len(names)
    committed = read_index(tmp_path / "docs.sqlite")
    assert before <= set(committed) and len(set(committed) - before) <= 1  # printed after its commit
    assert all(len(chunks) == 2 for chunks in committed.values())  # no file half stored
    with sqlite3.connect(tmp_path / "docs.sqlite") as con:
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == len(committed)  # none without chunks

    resumed = embedded(run("index", folder, "--db", tmp_path / "docs.sqlite", "--bundle", minilm_bundle,
                           "--precision", "fp32").stdout)
    assert resumed == {f"{name}.md" for name in names} - set(committed)
    if how != signal.SIGKILL:
        return
    # the resumed index holds what one uninterrupted run stores (fp32: a chunk's vector does not depend on which
    # files shared its model call, as int8's do a little)
    run("index", folder, "--db", tmp_path / "fresh.sqlite", "--bundle", minilm_bundle, "--precision", "fp32")
    got, fresh = read_index(tmp_path / "docs.sqlite"), read_index(tmp_path / "fresh.sqlite")
    assert sorted(got) == sorted(fresh) == sorted(f"{name}.md" for name in names)
    assert ranges(tmp_path / "docs.sqlite") == ranges(tmp_path / "fresh.sqlite")
    assert got == fresh


def ranges(db: Path) -> bytes:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT value FROM meta WHERE key = 'ranges'").fetchone()[0]


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF whose page draws `text` in Helvetica (what a PDF printer writes, minus everything optional)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_pdf_txt_and_md_are_indexed_and_other_files_skipped(minilm_bundle, tmp_path):
    pytest.importorskip("pypdf")
    folder, db = tmp_path / "mixed", tmp_path / "docs.sqlite"
    (folder / ".hidden").mkdir(parents=True)
    (folder / "whales.pdf").write_bytes(minimal_pdf(DOCUMENTS["whales"]))
    (folder / "guitar.txt").write_text(DOCUMENTS["guitar"])
    (folder / "bread.md").write_text(DOCUMENTS["bread"])
    (folder / "empty.md").write_text("  \n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 cut off in the download")  # no text, and the run goes on
    (folder / "quantum.docx").write_text(DOCUMENTS["quantum"])  # not a supported type
    (folder / ".hidden" / "tax.md").write_text(DOCUMENTS["tax"])  # hidden folders are skipped
    done = run("index", folder, "--db", db, "--bundle", minilm_bundle)
    assert embedded(done.stdout) == {"whales.pdf", "guitar.txt", "bread.md", "empty.md", "broken.pdf"}
    assert "embedded " + str(folder.resolve() / "empty.md") + " (0 chunks)" in done.stdout
    assert "embedded " + str(folder.resolve() / "broken.pdf") + " (0 chunks)" in done.stdout
    assert "no text from " + str(folder.resolve() / "broken.pdf") + ": PdfStreamError" in done.stderr
    assert embedded(run("index", folder, "--db", db, "--bundle", minilm_bundle).stdout) == set()
    assert top_file(db, minilm_bundle, "which sea creature is the biggest animal?") == "whales.pdf"
    with sqlite3.connect(db) as con:
        [(text,)] = con.execute("SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
                                "WHERE d.path LIKE '%whales.pdf'").fetchall()
    assert text == DOCUMENTS["whales"]


def test_the_splitter_cuts_at_boundaries_and_never_inside_a_word():
    split = runpy.run_path(str(SCRIPT), run_name="local_docs")["split"]  # the script, imported not run
    text = ("First sentence here. " * 30 + "\n\n" + "x" * 1500 + " tail words. " + "more words " * 200).strip()
    spans = split(text, 200)
    assert spans[0] == (0, text.index(". ", 180) + 1)  # the last sentence end inside the first 200 characters
    previous = 0
    for start, end in spans:
        assert previous <= start < end and not text[start].isspace() and not text[end - 1].isspace()
        assert (start == 0 or text[start - 1].isspace()) and (end == len(text) or text[end].isspace())
        assert end - start <= 200 or not any(c.isspace() for c in text[start:end])
        previous = end
    assert (text.index("x"), text.index("x") + 1500) in spans  # one word longer than a chunk: one span
    assert "".join("".join(text[a:b].split()) for a, b in spans) == "".join(text.split())  # all text, in order


def test_bad_input_gives_a_message_not_a_traceback(minilm_bundle, tmp_path):
    missing = run("index", tmp_path / "nowhere", "--db", tmp_path / "x.sqlite", "--bundle", minilm_bundle, check=False)
    assert missing.returncode != 0 and "is not a folder" in missing.stderr and "Traceback" not in missing.stderr
    empty = run("search", "anything", "--db", tmp_path / "x.sqlite", "--bundle", minilm_bundle, check=False)
    assert empty.returncode != 0 and "nothing indexed yet" in empty.stderr and not (tmp_path / "x.sqlite").exists()
    write_folder(tmp_path / "docs", ["guitar"])
    run("index", tmp_path / "docs", "--db", tmp_path / "x.sqlite", "--bundle", minilm_bundle, "--dim", "128")
    other = run("index", tmp_path / "docs", "--db", tmp_path / "x.sqlite", "--bundle", minilm_bundle, check=False)
    assert other.returncode != 0 and "built with dim=128, not 384" in other.stderr
    bad_dim = run("index", tmp_path / "docs", "--db", tmp_path / "y.sqlite", "--bundle", minilm_bundle, "--dim", "7",
                  check=False)
    assert bad_dim.returncode != 0 and "--dim must be" in bad_dim.stderr and "Traceback" not in bad_dim.stderr
