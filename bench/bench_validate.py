"""Speed of the preflight check on a realistic full-size file, as a ratio to reading and hashing it.

Generates (once, into .bench/) a just-under-200 MB file of 50,000 OpenAI chat-completions requests with
long (~4 KB) user messages, a tenth of them with literal non-ASCII text, then prints

    validate wall time / (plain read + sha256 of the same file)

each the best of a few runs in this process, and the process's peak RSS. Target: ratio <= 3.0.

    python bench/bench_validate.py            # the 200 MB file
    python bench/bench_validate.py --quick    # a 20 MB file, as a smoke test (no target: too few chunks
                                              # for the hashing thread to pay off, and too short to time well)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from batch_mcp.services.preflight import preflight

from _common import best_of, peak_rss_mb, print_ratio, request_file

TARGET_RATIO = 3.0
RUNS = 5
LINE_BYTES = 3_980  # 50,000 lines stay under the 200,000,000-byte limit
WORDS = """the of and to in is that for it as was with be by on not
this are or from at which but have an they were her she there one all
we their has been would more when if will who what its out about into than
them can only other new some time could these two may then first any like now
such make over even most after also made many before must through back years where much
way well down should because each just those people how too little state good very world
still own see work long here get both between life being under never day same another
know while last might great old year off come since against go came right used take
three quarterly revenue customer report summary""".split()
ACCENTED = ("café", "naïve", "résumé", "façade", "Zürich", "São Paulo", "—", "“quoted”", "…")
SYSTEM_PROMPT = "You are a careful analyst. Answer in at most three sentences."
MODELS = ("gpt-4o-mini",) * 6 + ("gpt-4.1-mini",) * 3 + ("gpt-4.1",)


def sentences(rng: random.Random, count: int) -> list[str]:
    """A pool of random sentences, some with accents, quotes or line breaks, to assemble messages from."""
    pool = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(6, 24))
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), rng.choice(ACCENTED))
        end = rng.choice([". ", ". ", "? ", '." ', ".\n"])
        pool.append(" ".join(words).capitalize() + end)
    return pool


def generate(path: Path, requests: int) -> None:
    """Write the file atomically (a partial file is never reused); deterministic for a given size."""
    rng = random.Random(requests)
    pool = sentences(rng, 2_000)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for i in range(requests):
            user = {"role": "user", "content": ""}
            request = {"custom_id": f"req-{i:06d}", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": MODELS[i % len(MODELS)], "max_tokens": 512, "temperature": 0.2,
                                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, user]}}
            ascii_only = i % 10 != 0  # most generators escape non-ASCII; some write it literally
            content = ""
            while len(content) < LINE_BYTES:
                content += rng.choice(pool)
            while True:  # trim to size: each dropped character drops at least one byte
                user["content"] = content
                line = json.dumps(request, ensure_ascii=ascii_only) + "\n"
                excess = len(line.encode()) - LINE_BYTES
                if excess <= 0:
                    break
                content = content[:-excess]
            out.write(line)
    tmp.replace(path)


def read_and_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="use a 20 MB file (smoke test)")
    args = parser.parse_args()
    requests = 5_000 if args.quick else 50_000
    path = request_file(requests)

    rss_before = peak_rss_mb()
    digest = read_and_hash(path)  # also warms the page cache
    report = preflight(path)
    assert report.valid and report.sha256 == digest and report.requests == requests, report.summary()
    baseline = best_of(RUNS, lambda: read_and_hash(path))
    validate = best_of(RUNS, lambda: preflight(path))

    print(f"file: {path.name}: {report.bytes / 1e6:.1f} MB, {report.requests:,} requests, "
          f"best of {RUNS} runs")
    print_ratio("read + sha256 (baseline)", baseline, baseline)
    print_ratio("preflight (validate)", validate, baseline, None if args.quick else TARGET_RATIO)
    print(f"throughput {report.bytes / validate / 1e6:,.0f} MB/s; peak RSS {peak_rss_mb():.0f} MiB "
          f"({rss_before:.0f} MiB before reading the file)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
