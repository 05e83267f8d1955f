"""PyRecognizer's command line: serve, train, tune, import, predict, models, people, enrol, forget, evaluate.

    python main.py serve [--host H] [--port P] [--dev]     (the default command)
    python main.py cameras                                  watch the cameras (serve starts this itself)
    python main.py train PATH [--tune]                      PATH: a zip or a folder of person folders
    python main.py tune PATH
    python main.py import FILE                              a gallery of encodings (.npz or JSON) as a model
    python main.py predict FILE... [--annotate]             one JSON envelope per photo or video, per line
    python main.py models
    python main.py people [NAME]                            the active model's people, or one person's photos
    python main.py enrol NAME PHOTO...                      add photos (or a zip of them) of a person
    python main.py forget NAME                              erase a person from every model, cache and log
    python main.py evaluate DATASET [--strangers DIR] [--model ID] [--baseline]

Every command prints JSON envelopes on stdout (the same as the REST API); it logs to
log/pyrecognizer.log only, so that stderr carries nothing but the progress bar (``serve`` logs
to stderr too). A configuration that cannot run exits with 2 and a CONFIG_NOT_VALID envelope.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from conf.config import Config, ConfigError, Paths, load_config
from datastructure.errors import PyRecognizerError
from datastructure.response import envelope, error_envelope


def print_envelope(answer: dict) -> None:
    print(json.dumps(answer, ensure_ascii=False), flush=True)


def command_serve(args, config: Config) -> int:
    from utils.cameras import supervised_cameras

    if args.dev:
        from api.app import create_app
        from api.tls import certificate_files

        tls = certificate_files(Paths(config.data_dir).tls, config.security) if config.security.tls else None
        app = create_app(config)
        with supervised_cameras(config):
            app.run(host=config.server.host, port=config.server.port, threaded=True, ssl_context=tls)
        return 0
    from api.wsgi import serve

    with supervised_cameras(config):  # the camera supervisor: its own process, started and stopped with the service
        serve(config)
    return 0


def command_cameras(args, config: Config) -> int:
    """Watch the cameras in this process (the supervisor `serve` starts; alone, e.g. on a second machine)."""
    import signal
    import threading

    from utils.cameras import Supervisor
    from utils.service import build_service

    build_service(config)  # logging, the data folders, dlib's models
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    Supervisor(config).run(stop, parent_pid=args.parent_pid)
    return 0


def command_train(args, config: Config) -> int:
    from utils.progress import progress_bar
    from utils.service import build_service

    service = build_service(config, console_log=False)
    source = Path(args.path)
    with progress_bar() as progress:
        job = service.jobs.run_here("tune" if args.tune else "train",
                                    lambda job_progress: service.train(source, tune=args.tune, progress=lambda *a: (
                                        progress(*a), job_progress(*a))))
    return printed_job(job)


def printed_job(job: dict) -> int:
    """Print a finished training or import job's envelope; return the exit status."""
    if job["state"] == "done":
        result = job["result"]
        print_envelope(envelope(result, description=f"model {result['model']} is active"))
        return 0
    error = job["error"]
    print_envelope(envelope(error["data"], description=error["description"], error=error["code"], status="KO"))
    return 1


def command_import(args, config: Config) -> int:
    from utils.archive import limits_from
    from utils.importing import checked_gallery
    from utils.progress import progress_bar
    from utils.service import build_service

    service = build_service(config, console_log=False)
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print_envelope(envelope(None, description=f"{args.file}: {exc.strerror}", error="MISSING_FILE", status="KO"))
        return 1
    gallery = checked_gallery(data, limits_from(config.limits))
    with progress_bar() as progress:
        job = service.jobs.run_here("import", lambda job_progress: service.import_gallery(
            gallery, source_name=Path(args.file).name, progress=lambda *a: (progress(*a), job_progress(*a))))
    return printed_job(job)


def command_predict(args, config: Config) -> int:
    from utils.service import build_service

    from utils.video import is_video_file, timeline_envelope

    service = build_service(config, console_log=False)
    failed = False
    for name in args.images:
        try:
            if is_video_file(Path(name)):
                answer = timeline_envelope(predicted_video(service, Path(name), args.annotate))
            else:
                answer = service.predict(Path(name).read_bytes(), save_annotated=args.annotate)
        except OSError as exc:
            answer, failed = envelope(None, description=f"{name}: {exc.strerror}", error="MISSING_FILE", status="KO"), True
        except PyRecognizerError as exc:
            answer, failed = error_envelope(exc), True
        answer["response"]["file"] = name
        if answer["response"].get("annotated", {}).get("saved"):
            answer["response"]["annotated"]["path"] = str(service.paths.annotated / answer["response"]["description"])
        print_envelope(answer)
    return 1 if failed else 0


def predicted_video(service, path: Path, thumbnails: bool = False) -> dict:
    """Return the timeline of a video, with a progress bar of the frames on stderr."""
    from utils.progress import progress_bar

    if not path.is_file():
        raise FileNotFoundError(2, "No such file or directory")
    with progress_bar("frame") as progress:
        return service.predict_video(path, progress=progress, save_thumbnails=thumbnails)


def command_models(args, config: Config) -> int:
    from datastructure.model_store import ModelStore

    store = ModelStore(Paths(config.data_dir).models)
    print_envelope(envelope(store.listing(), description="models, newest first", active=store.active_id()))
    return 0


def command_people(args, config: Config) -> int:
    from utils.service import build_service

    people = build_service(config, console_log=False).people
    if args.name:
        found = people.person(args.name)
        print_envelope(envelope(found, description=f"{len(found['photos'])} photos", model=found["model"]))
    else:
        found = people.listing()
        print_envelope(envelope(found["people"], description=f"{len(found['people'])} people", model=found["model"]))
    return 0


def command_enrol(args, config: Config) -> int:
    from utils.people import Upload
    from utils.service import build_service

    people = build_service(config, console_log=False).people
    uploads = []
    for name in args.photos:
        try:
            uploads.append(Upload(Path(name).name, Path(name).read_bytes()))
        except OSError as exc:
            print_envelope(envelope(None, description=f"{name}: {exc.strerror}", error="MISSING_FILE", status="KO"))
            return 1
    result = people.enrol(args.name, uploads)
    print_envelope(envelope(result, description=f"{len(result['added'])} photos added, {len(result['skipped'])} skipped",
                            model=result["model"]))
    return 0


def command_forget(args, config: Config) -> int:
    from utils.service import build_service

    result = build_service(config, console_log=False).people.forget(args.name)
    print_envelope(envelope(result, description="forgotten everywhere", model=result["erased"]["new_model"]))
    return 0


def command_evaluate(args, config: Config) -> int:
    """Measure a model: the table, the losses per person and the files on stderr; on stdout an
    envelope with the headline figures and the files (the JSON file holds every curve point)."""
    from utils.evaluation import brief, headline, run
    from utils.progress import progress_bar
    from utils.service import build_service

    service = build_service(config, console_log=False)
    with progress_bar(only_on_a_terminal=True) as progress:
        figures = run(service, Path(args.dataset), strangers=Path(args.strangers) if args.strangers else None,
                      model_id=args.model, baseline=args.baseline, progress=progress)
    files = figures["files"]
    print(headline(figures), file=sys.stderr)
    print(f"figures: {files['json']}\ncurve:   {files['png']}", file=sys.stderr)
    print_envelope(envelope(brief(figures), description=f"model {figures['model']} evaluated: "
                                                        f"{files['json']}, {files['png']}"))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="main.py", description="PyRecognizer: face recognition service and CLI")
    root.add_argument("--config", help="a JSON configuration file (default: conf/conf.json; $PYRECOGNIZER_CONFIG)")
    root.add_argument("--data-dir", help="where models, uploads and logs live ($PYRECOGNIZER_DATA_DIR)")
    commands = root.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the web service (default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (default from the config)")
    serve.add_argument("--dev", action="store_true", help="Flask's development server, for debugging only")
    train = commands.add_parser("train", help="train a model from a zip or a folder of person folders")
    train.add_argument("path")
    train.add_argument("--tune", action="store_true", help="search the KNN parameters (slower)")
    tune = commands.add_parser("tune", help="the same as train --tune")
    tune.add_argument("path")
    tune.set_defaults(tune=True)
    imports = commands.add_parser("import", help="make the active model of a gallery of encodings (.npz or JSON)")
    imports.add_argument("file", help=".npz with encodings (n x 128), names (n), optional files (n); or the same as JSON")
    predict = commands.add_parser("predict", help="recognise the faces in photos, or who appears when in videos")
    predict.add_argument("images", nargs="+", metavar="FILE", help="photos, or videos (mp4, mov, mkv, webm, avi)")
    predict.add_argument("--annotate", action="store_true",
                         help="also write an annotated copy (videos: thumbnails) under uploads/ (kept as annotated.keep/max_age say)")
    cameras = commands.add_parser("cameras", help="watch the cameras (the supervisor `serve` starts), until stopped")
    cameras.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)  # serve's: stop when it is gone
    commands.add_parser("models", help="list the models")
    people = commands.add_parser("people", help="the active model's people, or one person's photos")
    people.add_argument("name", nargs="?")
    enrol = commands.add_parser("enrol", help="add photos of a person (created if new) to a new active model")
    enrol.add_argument("name")
    enrol.add_argument("photos", nargs="+", help="photos, or zips of that person's photos")
    forget = commands.add_parser("forget", help="erase a person from every stored model, the cache, jobs and logs")
    forget.add_argument("name")
    evaluate = commands.add_parser("evaluate", help="measure a model on test photos and strangers")
    evaluate.add_argument("dataset", help="a zip or a folder of person folders (the training layout)")
    evaluate.add_argument("--strangers", help="a folder of photos of people the model does not know")
    evaluate.add_argument("--model", help="the model to evaluate (default: the active one)")
    evaluate.add_argument("--baseline", action="store_true",
                          help="also compute the plain face_recognition KNN recipe on the same encodings")
    return root


def overrides(args) -> dict:
    """Return the configuration the command line sets."""
    result: dict = {}
    if args.data_dir:
        result["data_dir"] = args.data_dir
    server = {key: getattr(args, key, None) for key in ("host", "port", "workers")}
    server = {key: value for key, value in server.items() if value is not None}
    if server:
        result["server"] = server
    return result


COMMANDS = {"serve": command_serve, "train": command_train, "tune": command_train, "import": command_import,
            "predict": command_predict, "models": command_models,
            "people": command_people, "enrol": command_enrol, "forget": command_forget,
            "evaluate": command_evaluate, "cameras": command_cameras}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        args = parser().parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    try:
        config = load_config(args.config, overrides(args))
        return COMMANDS[args.command](args, config)
    except ConfigError as exc:
        print_envelope(envelope(None, description=str(exc), error="CONFIG_NOT_VALID", status="KO"))
        return 2
    except PyRecognizerError as exc:
        print_envelope(error_envelope(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
