"""The OpenAPI 3 description of the REST API, served at /openapi.json."""


def _envelope(data_schema: dict | None = None, **extra) -> dict:
    properties = {
        "status": {"type": "string", "enum": ["OK", "KO"]},
        "error": {"type": ["string", "null"]},
        "description": {"type": "string"},
        "data": data_schema or {},
        "date": {"type": "string"},
        **extra,
    }
    return {"type": "object", "required": ["response"], "properties": {"response": {
        "type": "object", "required": ["status", "error", "description", "data", "date"], "properties": properties}}}


def _answer(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema or {"$ref": "#/components/schemas/Envelope"}}}}


def _errors(*codes: int) -> dict:
    return {str(code): _answer("error envelope") for code in codes}


def _upload(description: str) -> dict:
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": description}}}}}}


FACE = {"type": "object", "properties": {
    "name": {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    "distance": {"type": "number"}, "candidate": {"type": "string"},
    "runner_up": {"type": ["string", "null"]}, "runner_up_distance": {"type": ["number", "null"]},
    "box": {"type": "object", "properties": {side: {"type": "integer"} for side in ("top", "right", "bottom", "left")}}}}
ANNOTATED = {"type": "object", "required": ["saved"], "description": "whether the annotated copy was written, and why not",
             "properties": {"saved": {"type": "boolean"}, "reason": {"type": "string"}}}
MODEL_ID = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^\d{8}_\d{6}$"}}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}


def specification() -> dict:
    """Return the OpenAPI 3 document of the REST API."""
    predict = {"summary": "Recognise every face in a photo", "requestBody": _upload("a photo (JPEG, PNG, WebP, BMP, GIF, TIFF)"),
               "responses": {"200": _answer("names and faces", _envelope(
                   {"type": "object", "additionalProperties": {"type": "number"}},
                   faces={"type": "array", "items": FACE}, model={"type": "string"}, image_url={"type": "string"},
                   annotated=ANNOTATED)),
                   **_errors(400, 401, 413, 429, 503)}}
    train = {"summary": "Start a training job from a zip of person folders", "requestBody": _upload("a zip, one folder per person"),
             "responses": {"202": _answer("the job"), **_errors(400, 401, 409, 413, 422, 429, 507)}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "PyRecognizer", "version": "1.0.0",
                 "description": "Face recognition with dlib encodings and a KNN classifier."},
        "paths": {
            "/predict": {"post": {**predict, "operationId": "predict"}},
            "/": {"post": {**predict, "operationId": "predictRoot"}},
            "/train": {"post": {**train, "operationId": "train"}},
            "/tune": {"post": {**train, "summary": "Start a tuning job (grid search) from a zip", "operationId": "tune"}},
            "/jobs": {"get": {"summary": "List jobs", "operationId": "jobs", "responses": {"200": _answer("jobs")}}},
            "/jobs/{job_id}": {"get": {"summary": "A job's state and progress", "operationId": "job", "parameters": [JOB_ID],
                                       "responses": {"200": _answer("the job"), **_errors(404)}}},
            "/models": {"get": {"summary": "List models", "operationId": "models", "responses": {"200": _answer("models")}}},
            "/models/{model_id}": {
                "get": {"summary": "A model's metadata", "operationId": "model", "parameters": [MODEL_ID],
                        "responses": {"200": _answer("model.json"), **_errors(404, 409)}},
                "delete": {"summary": "Delete a model (not the active one)", "operationId": "deleteModel", "parameters": [MODEL_ID],
                           "responses": {"200": _answer("deleted"), **_errors(404, 409)}}},
            "/models/{model_id}/activate": {"post": {"summary": "Make a model active", "operationId": "activate", "parameters": [MODEL_ID],
                                                     "responses": {"200": _answer("activated"), **_errors(404, 409, 507)}}},
            "/uploads/{name}": {"get": {"summary": "An annotated image", "operationId": "upload",
                                        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                                        "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {}}}, **_errors(404)}}},
            "/verify": {"post": {"summary": "Whether the main faces of two photos are the same person", "operationId": "verify",
                                 "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                                     "type": "object", "required": ["file1", "file2"],
                                     "properties": {name: {"type": "string", "format": "binary"} for name in ("file1", "file2")}}}}},
                                 "responses": {"200": _answer("same, distance, confidence, boxes"), **_errors(400, 413, 422)}}},
            "/encode": {"post": {"summary": "The 128-d encoding and box of every face", "operationId": "encode",
                                 "requestBody": _upload("a photo"),
                                 "responses": {"200": _answer("faces with encodings"), **_errors(400, 413)}}},
            "/health": {"get": {"summary": "Liveness, the loaded model and warnings (LOW_DISK_SPACE); the worker pid for "
                                           "authorised callers", "operationId": "health", "responses": {"200": _answer("up", _envelope(
                                               {"type": "object", "properties": {
                                                   "up": {"type": "boolean"}, "model_loaded": {"type": "boolean"},
                                                   "model": {"type": ["string", "null"]},
                                                   "warnings": {"type": "array", "items": {"type": "string"}},
                                                   "pid": {"type": "integer"}}}))}}},
        },
        "components": {"schemas": {"Envelope": _envelope()}},
    }
