"""The single-layer perceptron's limit (Minsky and Papert): the perceptron rule learns AND and OR,
which a line separates, but never XOR, which no line separates; one hidden layer fixes that.

    python examples/perceptron_limit.py [--epochs N] [--backend NAME]
"""

import argparse

import numpy as np

from deltaprop import MLP

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
TARGETS = {"AND": np.array([0, 0, 0, 1]), "OR": np.array([0, 1, 1, 1]), "XOR": np.array([0, 1, 1, 0])}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)

    results = {}
    for name, y in TARGETS.items():
        signs = 2 * y - 1  # the perceptron's labels are ±1
        perceptron = MLP([2, 1], output_activation="step", loss="perceptron", backend=args.backend, seed=0)
        perceptron.fit(X, signs, epochs=args.epochs, batch_size=1, lr=0.1)
        mlp = MLP([2, 4, 2], activation="tanh", backend=args.backend, seed=3)
        mlp.fit(X, y, epochs=5 * args.epochs, batch_size=4, lr=0.5, momentum=0.9)
        results[name] = (perceptron.score(X, signs), mlp.score(X, y))
        print(f"{name:>3}: single-layer perceptron accuracy {results[name][0]:.2f}, 2-4-2 MLP {results[name][1]:.2f}")
    return results


if __name__ == "__main__":
    main()
