"""Local docs: index a folder of .txt / .md (and .pdf when pypdf is installed) into one SQLite file, then search it.

    python examples/local_docs.py index FOLDER --db docs.sqlite --bundle BUNDLE [--dim 256] [--chunking late]
    python examples/local_docs.py search "a question" --db docs.sqlite --bundle BUNDLE [-k 5]

Indexing embeds only new or changed files (size and mtime, then the content's sha256) and drops the files
that are gone. Each file is committed with its chunks in one transaction, so a run that is stopped (Ctrl-C
stops cleanly between batches; a kill loses only the work in flight) resumes where it stopped when run again.
Every chunk is stored with its character span, its text, its packed sign bits and its int8 codes (per-dimension
ranges calibrated once per index). Search takes the binary top k x 4 by Hamming distance and rescores that
shortlist with the float query against the int8 codes (edge_embed.search).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import re
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_embed import EdgeEmbedError, Embedder, InputError
from edge_embed.search import hamming_topk, int8_ranges, pack_bits, quantize_int8, rescore

SUFFIXES = {".txt", ".md", ".pdf"}
CHUNK_CHARS = 1000  # about 256 tokens of English prose
CALIBRATION_CHUNKS = 256  # chunks embedded once per index to fix the int8 ranges
CALIBRATION_TEXTS = (  # varied texts, embedded with them: ranges that cover more than the first files' topics
    "The central bank raised interest rates by a quarter point to slow inflation.",
    "Preheat the oven to 180 degrees and grease a round cake tin with butter.",
    "def parse(line):\n    key, _, value = line.partition('=')\n    return key.strip(), value.strip()",
    "The patient presented with a persistent cough, mild fever and shortness of breath.",
    "Photosynthesis converts light energy, water and carbon dioxide into glucose and oxygen.",
    "The striker curled the free kick into the top corner in the ninetieth minute.",
    "Under the lease, the tenant must give the landlord two months' written notice.",
    "Mount Everest is 8,849 metres high and lies on the border of Nepal and China.",
    "To reset the router, hold the button on the back for ten seconds until the lights blink.",
    "The novel follows three sisters who return to their childhood home after their father dies.",
    "Quarterly revenue grew 12% year over year, driven by subscriptions in Europe.",
    "Neurons communicate through electrical impulses and chemical signals at synapses.",
    "Le train pour Lyon part du quai numéro trois à huit heures quinze.",
    "Die Sitzung wurde auf nächsten Dienstag verschoben, weil zwei Mitglieder krank sind.",
    "SELECT name, count(*) FROM orders GROUP BY name HAVING count(*) > 10;",
    "I loved this hotel: friendly staff, a quiet room and a great breakfast!",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War.",
    "Error 404: the page you are looking for has been moved or no longer exists.",
    "Water boils at 100 degrees Celsius at sea level and at lower temperatures at altitude.",
    "Meeting notes: agreed to ship version 2.3 on Friday; Anna owns the release checklist.",
)
MULTIPLIER = 4  # binary shortlist of k x MULTIPLIER, rescored with int8
GROUP_CHARS = 8000  # late chunking: small files share model calls up to about this many characters
CANCELLED = object()  # what embed_late finds in place of a file that a Ctrl-C stopped

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
    sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    start INTEGER NOT NULL, end INTEGER NOT NULL, text TEXT NOT NULL, bits BLOB NOT NULL, int8 BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document_id);
"""


@dataclass
class Pending:
    """A file to (re-)embed: its text is read when its turn comes, so memory holds one block of the corpus."""

    path: Path
    mtime_ns: int
    size: int
    sha256: str = ""
    text: str = ""
    spans: list[tuple[int, int]] | None = None


# --- files -----------------------------------------------------------------------------------------------------

def read_text(path: Path) -> tuple[str, str]:
    """(text, sha256 of the file's bytes). A PDF pypdf cannot read gives no text (it is stored without chunks, and
    tried again once its bytes change)."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() != ".pdf":
        return data.decode("utf-8", errors="replace"), digest
    from pypdf import PdfReader

    try:
        return "\n\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages), digest
    except Exception as exc:  # a damaged or encrypted PDF: one file must not stop the run
        print(f"no text from {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return "", digest


def suffixes() -> set[str]:
    """The file types indexed here: PDFs only where pypdf is installed (installing it later picks them up)."""
    try:
        import pypdf  # noqa: F401
    except ImportError:
        print("PDFs are skipped: reading them needs pypdf (pip install 'edge-embed[docs]')", file=sys.stderr)
        return SUFFIXES - {".pdf"}
    return SUFFIXES


def split(text: str, max_chars: int = CHUNK_CHARS) -> list[tuple[int, int]]:
    """Character spans of at most max_chars, cut at a paragraph, then a sentence, then any whitespace; never inside
    a word (a longer run without whitespace is one span) and never blank."""
    spans, start = [], 0
    while True:
        while start < len(text) and text[start].isspace():
            start += 1
        if start >= len(text):
            return spans
        end = min(start + max_chars, len(text))
        if end < len(text) and not text[end].isspace():
            window = text[start:end]
            cut = max(window.rfind("\n\n"), max((m.end() for m in re.finditer(r"[.!?]\s", window)), default=-1))
            if cut <= max_chars // 4:  # no boundary in the window's last three quarters: any whitespace
                cut = max((m.start() for m in re.finditer(r"\s", window)), default=-1)
            if cut > 0:
                end = start + cut
            else:  # one long word: up to the next whitespace
                following = re.compile(r"\s").search(text, end)
                end = following.start() if following else len(text)
        stripped = end
        while text[stripped - 1].isspace():
            stripped -= 1
        spans.append((start, stripped))
        start = end


def scan(folder: Path) -> list[Path]:
    types = suffixes()
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in types and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


# --- the index -------------------------------------------------------------------------------------------------

def open_index(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA journal_mode = WAL")  # a killed run leaves the last committed file, never a torn one
    db.executescript(SCHEMA)
    return db


def model_identity(model: Embedder) -> str:
    manifest = model.manifest
    precision = "fp32" if "fp32" in manifest.models else sorted(manifest.models)[0]
    return manifest.files[manifest.models[precision][0]]  # the model's sha256: vectors of one model per index


def check_settings(db: sqlite3.Connection, settings: dict[str, object]) -> None:
    """The first run stores how the index is built; later runs must match it (one index, one vector space)."""
    stored = dict(db.execute("SELECT key, value FROM meta WHERE key != 'ranges'").fetchall())
    if not stored:
        db.executemany("INSERT INTO meta VALUES (?, ?)", settings.items())
        db.commit()
        return
    for key, value in settings.items():
        if key in stored and stored[key] != value:
            raise SystemExit(f"this index was built with {key}={stored[key]!r}, not {value!r}: pass the same "
                             "bundle and options, or start a new --db")


def plan(db: sqlite3.Connection, folder: Path) -> tuple[list[Pending], list[str]]:
    """(files to embed, paths to drop). A file whose size and mtime match is not read; one whose bytes still
    hash the same only has its mtime updated."""
    known = {path: (mtime, size, digest) for path, mtime, size, digest in
             db.execute("SELECT path, mtime_ns, size, sha256 FROM documents")}
    pending, seen = [], set()
    for path in scan(folder):
        key = str(path)
        try:
            stat = path.stat()
            same = key in known and (known[key][:2] == (stat.st_mtime_ns, stat.st_size)
                                     or hashlib.sha256(path.read_bytes()).hexdigest() == known[key][2])
        except OSError:  # gone since the scan (or unreadable): as if it were not there
            continue
        seen.add(key)
        if same and known[key][:2] == (stat.st_mtime_ns, stat.st_size):
            continue
        if same:
            db.execute("UPDATE documents SET mtime_ns = ?, size = ? WHERE path = ?",
                       (stat.st_mtime_ns, stat.st_size, key))
            continue
        pending.append(Pending(path, stat.st_mtime_ns, stat.st_size))
    db.commit()
    prefix = str(folder) + "/"
    gone = [path for path in known if path.startswith(prefix) and path not in seen]
    return pending, gone


def load(doc: Pending) -> Pending | None:
    """The file's text and spans; None when it can no longer be read (gone since the scan, say)."""
    try:
        doc.text, doc.sha256 = read_text(doc.path)
    except OSError as exc:
        print(f"skipped {doc.path}: {exc}", file=sys.stderr)
        return None
    doc.spans = split(doc.text)
    return doc


def store(db: sqlite3.Connection, doc: Pending, vectors: np.ndarray, ranges: np.ndarray) -> None:
    """One transaction: the old version of the file goes when its new chunks are in."""
    with db:
        db.execute("DELETE FROM documents WHERE path = ?", (str(doc.path),))
        cursor = db.execute("INSERT INTO documents (path, mtime_ns, size, sha256) VALUES (?, ?, ?, ?)",
                            (str(doc.path), doc.mtime_ns, doc.size, doc.sha256))
        bits, codes = pack_bits(vectors), quantize_int8(vectors, ranges)
        db.executemany("INSERT INTO chunks (document_id, start, end, text, bits, int8) VALUES (?, ?, ?, ?, ?, ?)",
                       [(cursor.lastrowid, start, end, doc.text[start:end], b.tobytes(), c.tobytes())
                        for (start, end), b, c in zip(doc.spans, bits, codes)])


def calibration_ranges(db: sqlite3.Connection, model: Embedder, pending: list[Pending], dim: int) -> np.ndarray:
    """Per-dimension int8 ranges, fixed on the first run: from CALIBRATION_TEXTS (so that a first run of a few
    similar files does not give ranges that clip every later file) and up to CALIBRATION_CHUNKS of its chunks."""
    row = db.execute("SELECT value FROM meta WHERE key = 'ranges'").fetchone()
    if row:
        return np.frombuffer(row[0], dtype=np.float32).reshape(2, dim)
    texts = list(CALIBRATION_TEXTS)
    for doc in pending:
        if len(texts) >= len(CALIBRATION_TEXTS) + CALIBRATION_CHUNKS:
            break
        try:
            text, _ = read_text(doc.path)
        except OSError:  # reported when its turn comes
            continue
        texts += [text[start:end] for start, end in split(text)][: len(CALIBRATION_TEXTS) + CALIBRATION_CHUNKS
                                                                   - len(texts)]
    ranges = int8_ranges(model.embed(texts, task="search_document", dim=dim))
    with db:
        db.execute("INSERT INTO meta VALUES ('ranges', ?)", (ranges.tobytes(),))
    return ranges


# --- embedding: one (document, vectors) pair at a time ---------------------------------------------------------

def embed_naive(model, docs, dim, progress, cancel):
    """Each chunk embedded on its own, all files' chunks through one embed_stream (batched across files)."""
    waiting: deque[Pending] = deque()

    def chunk_texts():
        for doc in docs:
            if load(doc):
                waiting.append(doc)
                yield from (doc.text[start:end] for start, end in doc.spans)

    leftover = np.zeros((0, dim), np.float32)  # rows of a file whose last chunks are in the next block
    for block in model.embed_stream(chunk_texts(), task="search_document", dim=dim, progress=progress,
                                    cancel=cancel):
        rows, offset = np.concatenate([leftover, block]), 0
        while waiting and len(waiting[0].spans) <= len(rows) - offset:
            doc = waiting.popleft()
            yield doc, rows[offset : offset + len(doc.spans)]
            offset += len(doc.spans)
        leftover = rows[offset:]
    while waiting and not waiting[0].spans and not cancel.is_set():  # files without text at the end
        yield waiting.popleft(), leftover[:0]


def groups(docs, cancel):
    """Loaded files in groups of about GROUP_CHARS characters (one file alone when it is longer)."""
    group: list[Pending] = []
    for doc in docs:
        if cancel.is_set():
            return
        if load(doc):
            group.append(doc)
        if sum(len(d.text) for d in group) >= GROUP_CHARS:
            yield group
            group = []
    if group and not cancel.is_set():
        yield group


def late_chunks(model, group, dim, progress, cancel):
    """embed_chunks on a group of files: one (spans, vectors) per file, None for a file it rejects (reported,
    the others go on); a shorter list when cancelled."""
    try:
        return model.embed_chunks([d.text for d in group], spans=[d.spans for d in group], dim=dim,
                                  progress=progress, cancel=cancel)
    except InputError as exc:
        if len(group) == 1:
            print(f"skipped {group[0].path}: {exc}", file=sys.stderr)
            return [None]
        return [result for doc in group for result in late_chunks(model, [doc], dim, progress, cancel)]


def embed_late(model, docs, dim, progress, cancel):
    """Late chunking: each file runs through the model once and each chunk pools its own tokens. Small files
    share model calls (a few thousand characters at a time), and each is still committed on its own."""
    tokens = {"before": 0, "call": 0}  # embed_chunks counts per call; the progress line counts the run

    def running(done: int, total: int) -> None:
        tokens["call"] = done
        progress(tokens["before"] + done, None)

    for group in groups(docs, cancel):
        results = iter(late_chunks(model, [doc for doc in group if doc.spans], dim, running, cancel))
        tokens["before"] += tokens["call"]
        for doc in group:
            if not doc.spans:
                yield doc, np.zeros((0, dim), np.float32)
                continue
            result = next(results, CANCELLED)
            if result is CANCELLED:  # stopped before this file was done
                return
            if result is not None:
                yield doc, result[1]


class ProgressLine:
    """One line on stderr, redrawn at most once a second: files done, tokens embedded, tokens a second."""

    def __init__(self, files: int):
        self.files, self.done_files, self.amount = files, 0, 0
        self.started = self.shown = time.monotonic()

    def __call__(self, done: int, total: int | None) -> None:
        self.amount = done
        if time.monotonic() - self.shown >= 1:
            self.show()

    def file_done(self) -> None:
        self.done_files += 1

    def show(self, end: str = "") -> None:
        self.shown = time.monotonic()
        rate = self.amount / max(self.shown - self.started, 1e-9)
        line = f"[index] {self.done_files}/{self.files} files, {self.amount:,} tokens ({rate:,.0f}/s)"
        print(("\r" if sys.stderr.isatty() else "") + line, end=end or ("" if sys.stderr.isatty() else "\n"),
              file=sys.stderr, flush=True)


def index(args) -> int:
    folder = Path(args.folder).resolve()
    if not folder.is_dir():
        raise SystemExit(f"{args.folder} is not a folder")
    model = Embedder(args.bundle, precision=args.precision, threads=args.threads)
    low, high = model.dims
    dim = high if args.dim is None else args.dim
    if not (low <= dim <= high and dim % 8 == 0):
        raise SystemExit(f"--dim must be a multiple of 8 from {low} to {high} for this model (binary vectors), "
                         f"not {dim}")
    db = open_index(args.db)
    check_settings(db, {"model": model_identity(model), "dim": dim, "chunking": args.chunking})
    pending, gone = plan(db, folder)
    with db:
        db.executemany("DELETE FROM documents WHERE path = ?", [(path,) for path in gone])
    for path in gone:
        print(f"dropped {path}", flush=True)
    if not pending:
        print(f"up to date: {len(gone)} dropped, nothing to embed", file=sys.stderr)
        return 0
    ranges = calibration_ranges(db, model, pending, dim)
    cancel = threading.Event()

    def stop(signum, frame):  # the first Ctrl-C stops between batches; a second one interrupts at once
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, stop)
    bar = ProgressLine(len(pending))
    embed = embed_late if args.chunking == "late" else embed_naive
    for doc, vectors in embed(model, pending, dim, bar, cancel):
        store(db, doc, vectors, ranges)
        bar.file_done()
        print(f"embedded {doc.path} ({len(doc.spans)} chunks)", flush=True)
    bar.show(end="\n")
    if cancel.is_set():
        print(f"stopped: {bar.done_files} of {len(pending)} files indexed; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


def search(args) -> int:
    if not Path(args.db).is_file():  # connecting would create an empty one
        raise SystemExit(f"{args.db} has nothing indexed yet (no such file): run `index FOLDER --db {args.db}` first")
    db = open_index(args.db)
    model = Embedder(args.bundle, precision=args.precision, threads=args.threads)
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    if "ranges" not in meta:
        raise SystemExit(f"{args.db} has nothing indexed yet: run `index FOLDER --db {args.db}` first")
    if meta["model"] != model_identity(model):
        raise SystemExit(f"{args.db} was indexed with another model: pass the bundle it was built with")
    dim = meta["dim"]
    stored = db.execute("SELECT id, bits FROM chunks ORDER BY id").fetchall()
    if not stored:
        print("no chunks indexed: the indexed files have no text", file=sys.stderr)
        return 0
    ids, bits = zip(*stored)
    bits = np.frombuffer(b"".join(bits), dtype=np.uint8).reshape(len(ids), dim // 8)  # in RAM: dim / 8 bytes a chunk
    query = model.embed([args.question], task="search_query", dim=dim)[0]
    shortlist, _ = hamming_topk(pack_bits(query), bits, args.k * MULTIPLIER)
    rows = [db.execute("SELECT d.path, c.start, c.end, c.text, c.int8 FROM chunks c JOIN documents d "
                       "ON d.id = c.document_id WHERE c.id = ?", (ids[i],)).fetchone() for i in shortlist]
    codes = np.frombuffer(b"".join(row[4] for row in rows), dtype=np.int8).reshape(len(rows), dim)
    ranges = np.frombuffer(meta["ranges"], dtype=np.float32).reshape(2, dim)
    best, scores = rescore(query, codes, np.arange(len(rows)), args.k, ranges)
    for rank, (i, score) in enumerate(zip(best, scores), 1):
        path, start, end, text, _ = rows[i]
        snippet = " ".join(text.split())[:160]
        print(f"{rank}. {score:.4f}  {path}  [{start}:{end}]  {snippet}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    index_parser = commands.add_parser("index", help="embed new and changed files, drop deleted ones")
    index_parser.add_argument("folder")
    index_parser.add_argument("--dim", type=int, help="Matryoshka dimension (a multiple of 8; default: full)")
    index_parser.add_argument("--chunking", choices=["late", "naive"], default="late",
                              help="late: chunks pooled from one pass over the file (default); naive: each alone")
    search_parser = commands.add_parser("search", help="print the best chunks for a question")
    search_parser.add_argument("question")
    search_parser.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
    for sub in (index_parser, search_parser):
        sub.add_argument("--db", required=True, help="the SQLite file (created on first index)")
        sub.add_argument("--bundle", required=True, help="an edge-embed bundle directory")
        sub.add_argument("--precision", default="auto", help="int8, fp32, fp16 or auto (default)")
        sub.add_argument("--threads", type=int, help="onnxruntime threads (default: its own choice)")
    args = parser.parse_args(argv)
    try:
        return index(args) if args.command == "index" else search(args)
    except EdgeEmbedError as exc:  # a bad bundle, dim or option: the runtime's message says what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the embedding started, or a second one: committed files stay
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
