"""A word-level RNN language model trained with truncated BPTT (Deep Learning from Scratch 2, ch. 5).

The book's SimpleRnnlm: Embedding -> RNN -> Linear -> softmax cross-entropy
(the mean over batch and time), trained with truncated backpropagation through
time.  ``nn.RNN(cell, stateful=True)`` carries the last hidden state from one
chunk of ``--time-size`` words to the next, detached: the forward connection is
kept, the backward one cut.  Each batch row reads the corpus from its own
offset.  Prints the perplexity (exp of the mean loss) after every epoch.

    python examples/rnnlm.py                      # tanh RNN, SGD lr 0.1 as in the book
    python examples/rnnlm.py --cell lstm --optim adam --lr 0.01

The corpus is a short text written for this example (the Penn Treebank cannot
be redistributed), the package's own corpus with ``--shipped`` (the book trains
on the first 1,000 words of its corpus, as ``--max-words`` does), or a file
given with ``--corpus``.
"""
import argparse
import re

import numpy as np

from tinygrad_rnn import no_grad
from tinygrad_rnn import functional as F
from tinygrad_rnn import nn
from tinygrad_rnn.optim import SGD, Adam, clip_grad_norm
from tinygrad_rnn.reference.time_rnn import truncated_batches
from tinygrad_rnn.training import CharLM, TrainConfig

TEXT = """
the old man walks to the river every morning . he carries a small boat and a long rope .
the river is cold in the morning and warm in the evening . the old man likes the cold river .
a girl lives in the house near the river . she watches the old man and his small boat .
every morning the girl says good morning to the old man . the old man says good morning to the girl .
one day the rope breaks and the small boat goes down the river . the old man runs after the boat .
the girl runs after the old man . they run along the river to the bridge .
at the bridge the boat stops . the girl takes the boat and the old man takes the rope .
they walk back to the house near the river . the old man makes a new rope .
the next morning the old man and the girl go to the river with the small boat and the new rope .
the river is cold and the sun is warm . the girl sits in the boat and the old man holds the rope .
they go down the river to the bridge and back to the house . the girl likes the river .
in the evening the girl says good night to the old man . the old man says good night to the girl .
every morning they go to the river . every evening they walk back to the house .
the boat is small and the rope is long . the river is long and the bridge is old .
one evening the sun goes down and the river is dark . the old man and the girl sit near the house .
the girl asks the old man about the river . the old man says the river goes to the sea .
the girl asks about the sea . the old man says the sea is large and the boats are large .
the next morning the girl takes the small boat and the long rope to the river .
she says the small boat will go to the sea one day . the old man says good morning to the girl .
"""


def tokenize(text):
    """Lower-case words and punctuation marks, in order."""
    return re.findall(r"[a-z']+|[.,!?;]", text.lower())


def build_corpus(words):
    """(ids, vocab): word ids in order of first appearance, and the id -> word list."""
    vocab, index = [], {}
    for w in words:
        if w not in index:
            index[w] = len(vocab)
            vocab.append(w)
    return np.array([index[w] for w in words], dtype=np.int64), vocab


def rnnlm_model(vocab_size, wordvec_size, hidden_size, cell="rnn", rng=0):
    """The book's SimpleRnnlm is the library's character model over word ids: Embedding(V, D) -> stateful
    RNN over a cell -> Linear(H, V), in float64."""
    config = TrainConfig(cell=cell, embed_size=wordvec_size, hidden_size=hidden_size, dtype="float64")
    return CharLM(vocab_size, config, rng=rng)


def main(argv=None, out=print):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=list(nn.CELLS), default="rnn")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--time-size", type=int, default=5, help="steps per truncated BPTT chunk")
    parser.add_argument("--wordvec", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--optim", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--clip", type=float, default=None, help="clip the gradient norm to this")
    parser.add_argument("--corpus", default=None, help="a text file to train on instead")
    parser.add_argument("--shipped", action="store_true",
                        help="train on the corpus shipped in tinygrad_rnn.data instead")
    parser.add_argument("--max-words", type=int, default=1000, help="use the first N words")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=1, help="print every N epochs")
    args = parser.parse_args(argv)

    text = TEXT
    if args.corpus:
        with open(args.corpus, encoding="utf-8") as f:
            text = f.read()
    elif args.shipped:
        from tinygrad_rnn.data import default_corpus
        text = default_corpus()
    ids, vocab = build_corpus(tokenize(text)[:args.max_words])
    if len(ids) < args.batch_size * args.time_size + 1:
        parser.error(f"the corpus has {len(ids)} words, too few for batch {args.batch_size} "
                     f"x time {args.time_size}")
    out(f"corpus: {len(ids)} words, vocabulary {len(vocab)}; cell {args.cell}, "
        f"batch {args.batch_size}, time {args.time_size}")

    model = rnnlm_model(len(vocab), args.wordvec, args.hidden, cell=args.cell, rng=args.seed)
    params = list(model.parameters())
    opt = SGD(params, lr=args.lr) if args.optim == "sgd" else Adam(params, lr=args.lr)
    perplexities = []
    for epoch in range(1, args.epochs + 1):
        model.reset_state()
        total, count = 0.0, 0
        for xs, ts in truncated_batches(ids, args.batch_size, args.time_size):
            opt.zero_grad()
            loss = F.cross_entropy(model(xs), ts)  # the mean over N * T
            loss.backward()                        # stops at the detached state: truncated BPTT
            if args.clip:
                clip_grad_norm(params, args.clip)
            opt.step()
            total += loss.item()
            count += 1
        perplexities.append(float(np.exp(total / count)))
        if args.log_every and (epoch % args.log_every == 0 or epoch in (1, args.epochs)):
            out(f"epoch {epoch:4d}  perplexity {perplexities[-1]:.2f}")

    # a few words from the trained model, greedy, starting from "the"
    model.reset_state()
    word = vocab.index("the") if "the" in vocab else 0
    sample = [vocab[word]]
    with no_grad():
        for _ in range(12):
            word = int(model(np.array([[word]])).data[0, -1].argmax())
            sample.append(vocab[word])
    out("greedy sample: " + " ".join(sample))
    return dict(perplexities=perplexities, vocab_size=len(vocab), words=len(ids), sample=sample)


if __name__ == "__main__":
    main()
