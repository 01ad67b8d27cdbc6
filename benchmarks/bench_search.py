"""Warm text-query latency of ``twobranch search`` against a large synthetic index.

    python benchmarks/bench_search.py [--images 100000] [--dim 512] [--queries 300]
        [--index-type flat|ivf|hnsw|all] [--k 10] [--threads T] [--http]

Builds a SearchIndex in memory from synthetic unit-length image embeddings (no data root, no
trained model: an untrained embedding network of the paper's widths over GloVe 6B 50-d mean
word vectors; the speed does not depend on the weights) and times the whole query path of
``ops.search.engine.search_text``: tokenize, encode, embed with the text branch, faiss search,
results with their captions. Prints the index build time, its memory and size, and the warm
single-query p50 / p95 latency, wall and CPU (all splits, and the 10% test split through the
id-range filter). The images cluster around the embeddings of random word-bag captions, as a
trained model's do around what they show, so the approximate indexes' recall against the exact
one (``--index-type all``) means something; uniformly random vectors have no neighbours.

``--http`` also times the same queries through ``twobranch serve``'s application (uvicorn on
127.0.0.1, one kept-alive connection): ``GET /search?q=…&k=…`` with its JSON answer.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import faiss
import numpy as np
import pandas as pd
import torch
from peak_rss import PeakRss

from models.embedding_net import EmbeddingNet
from ops.data.tables import CAPTIONS_PER_IMAGE
from ops.features.text.settings import WordVectorSettings
from ops.features.text.text_features import TextEncoders
from ops.features.text.word_vectors import load_word_vectors
from ops.search.engine import SearchIndex, search_text
from ops.search.service import ServiceError, background_server, create_app
from ops.search.settings import IndexSettings
from ops.search.vectors import new_index, training_rows

WORDS = (
    "a an the two three man woman child dog cat horse bird person people group of on in at "
    "with near under beside running walking sitting standing playing riding eating holding "
    "beach street park field snow water grass table kitchen room bench car bus train bike "
    "red blue green white black yellow brown small large young old little big wooden "
    "ball frisbee umbrella kite surfboard skateboard pizza cake phone book sign tree sky"
).split()


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def build(settings: IndexSettings, embeddings: np.ndarray) -> tuple[faiss.Index, float, float]:
    """The index as the retrieval_index asset builds it; (index, seconds, peak MiB above)."""
    with PeakRss() as memory:
        started = time.perf_counter()
        index = new_index(settings, embeddings.shape[1], len(embeddings))
        sample = training_rows(settings, len(embeddings))
        if sample is not None:
            index.train(embeddings[sample])
        for start in range(0, len(embeddings), settings.chunk_rows):
            index.add(embeddings[start : start + settings.chunk_rows])
        seconds = time.perf_counter() - started
    return index, seconds, memory.peak - memory.start


def latencies(
    index: SearchIndex, queries: list[str], k: int, split: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: (wall ms, process CPU ms). On a busy shared machine the CPU time shows what
    the query costs; the wall time what this machine answered in."""
    for query in queries[:10]:  # warm: first calls build caches (captions by image, faiss)
        search_text(index, [query], k, split)
    wall, cpu = [], []
    for query in queries:
        started, cpu_started = time.perf_counter(), time.process_time()
        [result] = search_text(index, [query], k, split)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        assert len(result.hits) == k
    return 1000 * np.array(wall), 1000 * np.array(cpu)


class OneIndex:
    """The service's index source for an index built in memory."""

    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self.default_dataset = index.dataset

    def get(self, dataset: str) -> SearchIndex:
        if dataset != self.default_dataset:
            raise ServiceError(404, f"unknown dataset {dataset!r}")
        return self.index

    def loaded(self) -> dict[str, str]:
        return {self.default_dataset: self.index.manifest["run_id"]}


def http_latencies(
    index: SearchIndex, queries: list[str], k: int, split: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per query through HTTP: (wall ms, this process's CPU ms: server and client share it)."""
    with background_server(create_app(OneIndex(index))) as url:
        address = urlsplit(url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)

        def ask(query: str) -> dict:
            params = {"q": query, "k": k} | ({"split": split} if split else {})
            connection.request("GET", "/search?" + urlencode(params))
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {body[:200]!r}")
            return json.loads(body)

        for query in queries[:10]:
            ask(query)
        wall, cpu = [], []
        for query in queries:
            started, cpu_started = time.perf_counter(), time.process_time()
            answer = ask(query)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            assert len(answer["hits"]) == k
        connection.close()
    return 1000 * np.array(wall), 1000 * np.array(cpu)


def clustered_embeddings(
    rng: np.random.Generator, n: int, centers: np.ndarray, spread: float = 0.6
) -> np.ndarray:
    """``n`` unit vectors, each a noisy copy of one of ``centers``."""
    dim = centers.shape[1]
    rows = centers[rng.integers(len(centers), size=n)] * np.sqrt(1 - spread**2)
    rows += spread * unit_rows(rng, n, dim)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--index-type", default="flat", choices=("flat", "ivf", "hnsw", "all"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--http", action="store_true", help="also time the queries through the HTTP service"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    wv = load_word_vectors(WordVectorSettings(), vocab_filter=set(WORDS))
    encoders = TextEncoders("mean", wv)
    model = EmbeddingNet(2048, wv.dim, 2048, args.dim).eval()

    def caption() -> str:
        return " ".join(rng.choice(WORDS, size=rng.integers(4, 10)))

    with torch.no_grad():
        topics = torch.from_numpy(encoders.encode([caption().split() for _ in range(2000)]))
        centers = model.embed_text(topics).numpy()
    embeddings = clustered_embeddings(rng, args.images, centers)
    splits = np.where(np.arange(args.images) < int(0.9 * args.images), "train", "test")
    images = pd.DataFrame(
        {
            "image_id": [f"img{i:07d}" for i in range(args.images)],
            "split": splits,
            "path": [f"/data/images/img{i:07d}.jpg" for i in range(args.images)],
        }
    )
    per = CAPTIONS_PER_IMAGE
    captions = pd.DataFrame(
        {
            "caption_id": [f"img{i // per:07d}#{i % per}" for i in range(per * args.images)],
            "image_id": np.repeat(images["image_id"].to_numpy(), per),
            "split": np.repeat(splits, per),
            "text": [f"caption {i % per} of image {i // per}" for i in range(per * args.images)],
        }
    )
    queries = [caption() for _ in range(args.queries)]
    test = int(0.9 * args.images)
    types = ("flat", "ivf", "hnsw") if args.index_type == "all" else (args.index_type,)
    print(
        f"{args.images:,} images × {args.dim}-d, {args.queries} warm single text queries, "
        f"k={args.k}, torch threads {torch.get_num_threads()}, faiss threads "
        f"{faiss.omp_get_max_threads()}"
    )
    header = (
        f"{'index':<6} {'build s':>8} {'build MiB':>10} {'size MiB':>9} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p50 cpu':>8} {'p50 test':>9} {'p95 test':>9} "
        f"{'recall@k vs flat':>17}"
    )
    print(header)
    exact: list[set[str]] | None = None
    served: list[tuple[str, np.ndarray, np.ndarray]] = []
    for index_type in types:
        settings = IndexSettings(index_type=index_type)
        image_index, seconds, build_mib = build(settings, embeddings)
        size_mib = len(faiss.serialize_index(image_index)) / 2**20
        index = SearchIndex(
            root=Path("."),
            dataset="bench",
            manifest={
                "run_id": "bench",
                "amp": True,
                "search_parameters": settings.search_parameters(),
                "images": {"splits": {"train": [0, test], "test": [test, args.images]}},
                "captions": {"splits": {}},
            },
            images=images,
            captions=captions,
            image_index=image_index,
            caption_index=faiss.IndexFlatIP(args.dim),
            encoders=encoders,
            text_branch=model.text_branch.to_arrays(),
            device="cpu",
        )
        everything, cpu = latencies(index, queries, args.k, None)
        one_split, _ = latencies(index, queries, args.k, "test")
        found = [{h.image_id for h in r.hits} for r in search_text(index, queries, args.k)]
        if index_type == "flat":
            exact = found  # the reference for the approximate indexes (--index-type all)
        recall = (
            np.mean([len(a & b) / args.k for a, b in zip(found, exact, strict=True)])
            if exact is not None
            else float("nan")
        )
        print(
            f"{index_type:<6} {seconds:>8.2f} {build_mib:>10.0f} {size_mib:>9.0f} "
            f"{np.percentile(everything, 50):>7.2f} {np.percentile(everything, 95):>7.2f} "
            f"{np.percentile(cpu, 50):>8.2f} "
            f"{np.percentile(one_split, 50):>9.2f} {np.percentile(one_split, 95):>9.2f} "
            f"{recall:>17.3f}"
        )
        if args.http:
            served.append((index_type, *http_latencies(index, queries, args.k, None)))
            served.append((f"{index_type} test", *http_latencies(index, queries, args.k, "test")))
    if served:
        print("\nthrough HTTP (GET /search, JSON answer, one kept-alive connection):")
        print(f"{'index':<10} {'p50 ms':>7} {'p95 ms':>7} {'p50 cpu':>8}")
        for name, wall, cpu in served:
            print(
                f"{name:<10} {np.percentile(wall, 50):>7.2f} {np.percentile(wall, 95):>7.2f} "
                f"{np.percentile(cpu, 50):>8.2f}"
            )


if __name__ == "__main__":
    main()
