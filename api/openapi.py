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


FACE = {"type": "object", "required": ["name", "confidence", "box"],
        "description": "distance, candidate, runner_up and runner_up_distance only for the API token or the admin login",
        "properties": {
            "name": {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "distance": {"type": "number"}, "candidate": {"type": "string"},
            "runner_up": {"type": ["string", "null"]}, "runner_up_distance": {"type": ["number", "null"]},
            "box": {"type": "object",
                    "properties": {side: {"type": "integer"} for side in ("top", "right", "bottom", "left")}}}}
MODEL_ID = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^\d{8}_\d{6}(_[1-9]\d{0,5})?$"}}
NAME = {"name": "name", "in": "path", "required": True, "description": "a person's name (any case)",
        "schema": {"type": "string", "maxLength": 100}}
PHOTO_ID = {"name": "photo_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}


def specification() -> dict:
    """Return the OpenAPI 3 document of the REST API."""
    predict = {"summary": "Recognise every face in a photo", "requestBody": _upload("a photo (JPEG, PNG, WebP, BMP, GIF, TIFF)"),
               "responses": {"200": _answer("names and faces", _envelope(
                   {"type": "object", "additionalProperties": {"type": "number"}},
                   faces={"type": "array", "items": FACE}, model={"type": "string"}, image_url={"type": "string"})),
                   **_errors(400, 401, 413, 429, 503)}}
    train = {"summary": "Start a training job from a zip of person folders", "requestBody": _upload("a zip, one folder per person"),
             "responses": {"202": _answer("the job"), **_errors(400, 401, 409, 413, 422, 429)}}
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
            "/models/import": {"post": {
                "summary": "Import a gallery of precomputed encodings as a new active model",
                "description": "An .npz (numpy.savez: encodings n x 128, names n, optional files n; never unpickled) "
                               "or the same as a JSON object. Checked at once (422 GALLERY_NOT_VALID lists every "
                               "problem: shape, NaN, names), then fitted in a background job like /train.",
                "operationId": "importGallery", "requestBody": _upload("the gallery: .npz or JSON"),
                "responses": {"202": _answer("the job"), **_errors(401, 409, 413, 422, 507)}}},
            "/models/{model_id}": {
                "get": {"summary": "A model's metadata", "operationId": "model", "parameters": [MODEL_ID],
                        "responses": {"200": _answer("model.json"), **_errors(404, 409)}},
                "delete": {"summary": "Delete a model (not the active one)", "operationId": "deleteModel", "parameters": [MODEL_ID],
                           "responses": {"200": _answer("deleted"), **_errors(404, 409)}}},
            "/models/{model_id}/activate": {"post": {"summary": "Make a model active", "operationId": "activate", "parameters": [MODEL_ID],
                                                     "responses": {"200": _answer("activated"), **_errors(404, 409)}}},
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
            "/people": {"get": {"summary": "The active model's people with photo counts", "operationId": "people",
                                "responses": {"200": _answer("people"), **_errors(401)}}},
            "/people/{name}": {
                "get": {"summary": "A person's photos (ids, source names, added dates)", "operationId": "person",
                        "parameters": [NAME], "responses": {"200": _answer("the person"), **_errors(401, 404)}},
                "delete": {"summary": "Remove a person from the active model (a new model version)", "operationId": "removePerson",
                           "parameters": [NAME], "responses": {"200": _answer("the new model"), **_errors(401, 404, 409)}},
                "patch": {"summary": "Rename a person", "operationId": "renamePerson", "parameters": [NAME],
                          "requestBody": {"required": True, "content": {"application/json": {"schema": {
                              "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}},
                          "responses": {"200": _answer("the new model"), **_errors(401, 404, 409, 422)}}},
            "/people/{name}/photos": {"post": {
                "summary": "Enrol photos of a person (created if new); each must show exactly one face",
                "operationId": "enrol", "parameters": [NAME],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"], "properties": {"file": {
                        "type": "array", "items": {"type": "string", "format": "binary"},
                        "description": "one or more photos, or a zip of that person's photos"}}}}}},
                "responses": {"201": _answer("the new model, photos added and skipped"),
                              **_errors(400, 401, 409, 413, 422)}}},
            "/people/{name}/photos/{photo_id}": {"delete": {
                "summary": "Remove one photo of a person", "operationId": "removePhoto", "parameters": [NAME, PHOTO_ID],
                "responses": {"200": _answer("the new model"), **_errors(401, 404, 409)}}},
            "/people/{name}/forget": {"post": {
                "summary": "Erase a person from every stored model, the encoding cache, job records, annotated copies and logs",
                "operationId": "forget", "parameters": [NAME],
                "responses": {"200": _answer("what was erased"), **_errors(401, 404, 409)}}},
            "/health": {"get": {"summary": "Liveness and the loaded model", "operationId": "health", "responses": {"200": _answer("up")}}},
        },
        "components": {"schemas": {"Envelope": _envelope()}},
    }
