"""Score a learning curve while its run trains: every few minutes, score the new snapshots
(`crslib.studies.curve.learning_curve`, points already scored are reused); stop once the run is
finished and its final point is scored.

    python tools/watch_curve.py smollm2 inspired gcrs [--every 300] [--split dev]
"""
import argparse
import sys
import time

from crslib.studies import curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile")
    p.add_argument("dataset")
    p.add_argument("variant")
    p.add_argument("--split", default=None, help="default: the dataset's validation split")
    p.add_argument("--every", type=float, default=300)
    args = p.parse_args(argv)
    while True:
        try:
            c = curve.learning_curve(args.profile, args.dataset, args.variant, args.split)
            if c["finished"]:
                print(f"done: chosen {c['chosen_steps']} steps", flush=True)
                return 0
        except FileNotFoundError as e:
            print(f"waiting: {e}", flush=True)
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
