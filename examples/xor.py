"""XOR: the smallest problem that needs a hidden layer. A 2-4-2 tanh network learns it by backprop.

    python examples/xor.py [--epochs N] [--backend NAME]
"""

import argparse

from deltaprop import MLP
from deltaprop.data import load_xor


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)

    data = load_xor()
    model = MLP([2, 4, 2], activation="tanh", output_activation="softmax", loss="cross_entropy",
                backend=args.backend, seed=3)
    history = model.fit(data.X_train, data.y_train, epochs=args.epochs, batch_size=4, lr=0.5, momentum=0.9)
    accuracy = model.score(data.X_train, data.y_train)
    print(f"backend {model.selection.describe()}")
    for x, p in zip(data.X_train, model.predict_proba(data.X_train)):
        print(f"  {x.astype(int)} -> P(1) = {p[1]:.3f}")
    print(f"final loss {history.loss[-1]:.4f}, accuracy {accuracy:.2f}")
    return accuracy


if __name__ == "__main__":
    main()
