"""A web page to see what a checkpoint sees and says: upload a clip or an image (or pick a sample of a
validation set) and see the frames the model samples, its caption, its video-blind control and each
other checkpoint's captions side by side.

    python -m llava.serve.web --model-path CKPT
    python -m llava.serve.web --model-path RUN/checkpoint-words-1M --model-path RUN/checkpoint-words-10M \\
        --data val.json --video-folder VIDEOS

Then open http://127.0.0.1:7860. On a cluster node, serve on the node's network (--host 0.0.0.0), forward
a port of your machine to it through the login node (`ssh -L 7860:NODE:7860 user@login`, NODE as the
server's first line names it) and open the same address on your machine. Ctrl-C (or SIGTERM) stops the
server.

The page shows:
- the frames each clip is read at (the same frames and preprocessing as training and
  `python -m llava.serve.cli`), as the vision tower is given them, with their time in the clip;
- each checkpoint's caption (greedy unless the temperature is raised), exactly as serve.cli captions;
- beside it, the video-blind control: the same checkpoint given blank frames (the processor's mean
  colour, as many as the clip's) in place of the clip: what it says without seeing anything;
- the reference caption (the sample's last answer) for a sample of --data;
- where a caption holds boxes or spans (coordinate tokens or digits), those drawn on the frames; coordinate
  tokens are written as numbers in the captions (web_grounding.py; docs/web_page.md).

Models are loaded once, at start; requests are served one at a time, each user getting their own results.
A file that is not a clip or an image, a broken clip, or one larger than --max-upload-mb gets one error
line on the page, and the server goes on serving.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading

from ..errors import ArgumentParser, InputError, UsageError, check_input_folder, entry_point

logger = logging.getLogger("llava.serve.web")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m llava.serve.web",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--model-path",
        action="append",
        required=True,
        help="llava checkpoint folder (or an adapter-only run's, with --model-base); repeat it to compare "
        "checkpoints side by side",
    )
    parser.add_argument("--model-base", help="the language model adapter-only runs were trained on")
    parser.add_argument("--data", help="LLaVA JSON/JSONL set whose clips and images the page offers, with references")
    parser.add_argument("--video-folder", help="folder the --data video paths are relative to")
    parser.add_argument("--image-folder", help="folder the --data image paths are relative to")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0: every network it is on, "
        "for a port forwarded through a cluster's login node)",
    )
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: each model's mm_num_frames)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu... (default: the GPU where there is one)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=100.0, help="largest upload the page takes, in MB (default 100)"
    )
    # The page's decoding controls start at these (serve.cli's flags and defaults).
    parser.add_argument("--temperature", type=float, default=0.0, help="the page's starting value; 0 (default): greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="the page's starting value (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the page's starting value (default 64)")
    return parser


def check_port(host: str, port: int) -> None:
    """InputError where the server could not listen on `host`:`port` (in use, not an address of this
    machine), checked before any model is loaded. SO_REUSEADDR as the server sets it: a port left in
    TIME_WAIT by a server stopped a moment ago is free."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise InputError(f"--host {host} is not an address of this machine ({e.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise InputError(
                    f"--port {port} is in use on {host}: another server listens there; choose another --port"
                ) from None
            raise InputError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


def check_arguments(parser, args) -> list[dict] | None:
    """Everything the command line names, checked before a model is loaded; returns --data's samples."""
    from . import checks
    from .web_captions import Decoding

    try:
        Decoding(args.max_new_tokens, args.temperature, args.top_p)
    except InputError as e:
        parser.error(str(e))

    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: a port is a number from 1 to 65535")
    if args.num_frames is not None and args.num_frames < 1:
        parser.error(f"--num-frames {args.num_frames}: a clip is read at one frame or more")
    if not args.max_upload_mb > 0:
        parser.error(f"--max-upload-mb {args.max_upload_mb:g}: the limit must be above 0")
    if args.data is None and (args.video_folder or args.image_folder):
        parser.error("--video-folder and --image-folder name where the media of --data are; give --data too")
    if importlib.util.find_spec("gradio") is None:
        raise InputError("the web page needs gradio, which is not installed: pip install 'llava[web]'")
    for path in args.model_path:
        config = checks.check_model(path, args.model_base)
        checks.require_vision(config, path, "caption images or videos")
    samples = None
    if args.data:
        samples = checks.check_data(args.data)
        kinds = {sample.get("modality") for sample in samples}
        if "video" in kinds and not args.video_folder:
            parser.error(f"--data has clips: give the folder they are in (--video-folder DIR) ({args.data})")
        if "image" in kinds and not args.image_folder:
            parser.error(f"--data has images: give the folder they are in (--image-folder DIR) ({args.data})")
        if not kinds - {None}:
            raise InputError(f"--data has no sample with a clip or an image to show ({args.data})")
        check_input_folder(args.video_folder, "--video-folder")
        check_input_folder(args.image_folder, "--image-folder")
    check_port(args.host, args.port)
    return samples


def serve_until_stopped(page, host: str, port: int) -> None:
    """Serves `page` until SIGINT (Ctrl-C) or SIGTERM, then closes it: the port is free again when this
    returns."""
    from .web_page import launch

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = launch(page, host, port)
        print(f"serving on {url} (on {socket.gethostname()}; Ctrl-C stops it)", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping the server", file=sys.stderr, flush=True)
    finally:
        page.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv=None) -> int:
    """The command line; an expected failure raises (InputError, UsageError...): `cli` prints it as one
    line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    samples = check_arguments(parser, args)

    from .web_captions import Captioner, Decoding, checkpoint_names, load_checkpoint

    decoding = Decoding(args.max_new_tokens, args.temperature, args.top_p)
    from .web_page import build_page

    checkpoints = []
    for name, path in zip(checkpoint_names(args.model_path), args.model_path):
        try:
            checkpoint = load_checkpoint(
                name,
                path,
                args.model_base,
                device=args.device,
                num_frames=args.num_frames,
                data=args.data,
                samples=samples,
                video_folder=args.video_folder,
                image_folder=args.image_folder,
            )
        except UsageError as e:  # more --num-frames than this model takes
            parser.error(f"{e} ({path})")
        checkpoints.append(checkpoint)
    captioner = Captioner(checkpoints, args.max_upload_mb)
    data_name = os.path.basename(args.data) if args.data else None
    serve_until_stopped(build_page(captioner, data_name, decoding), args.host, args.port)
    return 0


# The command line: an expected failure ends in one line `error: WHAT (WHERE)` and a non-zero status.
cli = entry_point(main)


if __name__ == "__main__":
    sys.exit(cli())
