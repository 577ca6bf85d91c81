from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_TYPE_UNSPECIFIED: _ClassVar[PixelType]
    PIXEL_TYPE_UINT8: _ClassVar[PixelType]
    PIXEL_TYPE_UINT16: _ClassVar[PixelType]
    PIXEL_TYPE_FLOAT32: _ClassVar[PixelType]

class Tracker(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRACKER_UNSPECIFIED: _ClassVar[Tracker]
    TRACKER_BUILTIN: _ClassVar[Tracker]
    TRACKER_TRACKMATE: _ClassVar[Tracker]
    TRACKER_TRACKMATE_LAP: _ClassVar[Tracker]

class Sampler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLER_UNSPECIFIED: _ClassVar[Sampler]
    SAMPLER_FAST: _ClassVar[Sampler]
    SAMPLER_ANCESTRAL: _ClassVar[Sampler]
PIXEL_TYPE_UNSPECIFIED: PixelType
PIXEL_TYPE_UINT8: PixelType
PIXEL_TYPE_UINT16: PixelType
PIXEL_TYPE_FLOAT32: PixelType
TRACKER_UNSPECIFIED: Tracker
TRACKER_BUILTIN: Tracker
TRACKER_TRACKMATE: Tracker
TRACKER_TRACKMATE_LAP: Tracker
SAMPLER_UNSPECIFIED: Sampler
SAMPLER_FAST: Sampler
SAMPLER_ANCESTRAL: Sampler

class StreamRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: StreamConfig
    frame: Frame
    def __init__(self, config: _Optional[_Union[StreamConfig, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class StreamConfig(_message.Message):
    __slots__ = ("pixel_size_um", "frame_interval_s", "exposure_s", "pixel_type", "height", "width", "detector", "linker", "window", "change", "tracker", "name")
    PIXEL_SIZE_UM_FIELD_NUMBER: _ClassVar[int]
    FRAME_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_S_FIELD_NUMBER: _ClassVar[int]
    PIXEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    LINKER_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    TRACKER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    pixel_size_um: float
    frame_interval_s: float
    exposure_s: float
    pixel_type: PixelType
    height: int
    width: int
    detector: DetectorParams
    linker: LinkerParams
    window: WindowParams
    change: ChangeParams
    tracker: Tracker
    name: str
    def __init__(self, pixel_size_um: _Optional[float] = ..., frame_interval_s: _Optional[float] = ..., exposure_s: _Optional[float] = ..., pixel_type: _Optional[_Union[PixelType, str]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., detector: _Optional[_Union[DetectorParams, _Mapping]] = ..., linker: _Optional[_Union[LinkerParams, _Mapping]] = ..., window: _Optional[_Union[WindowParams, _Mapping]] = ..., change: _Optional[_Union[ChangeParams, _Mapping]] = ..., tracker: _Optional[_Union[Tracker, str]] = ..., name: _Optional[str] = ...) -> None: ...

class DetectorParams(_message.Message):
    __slots__ = ("radius_um", "threshold", "median_filter", "dark_spots", "camera_offset_adu", "camera_gain_adu_per_e", "read_noise_e", "camera_estimated", "camera_estimate_frames")
    RADIUS_UM_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_FILTER_FIELD_NUMBER: _ClassVar[int]
    DARK_SPOTS_FIELD_NUMBER: _ClassVar[int]
    CAMERA_OFFSET_ADU_FIELD_NUMBER: _ClassVar[int]
    CAMERA_GAIN_ADU_PER_E_FIELD_NUMBER: _ClassVar[int]
    READ_NOISE_E_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ESTIMATE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    radius_um: float
    threshold: float
    median_filter: bool
    dark_spots: bool
    camera_offset_adu: float
    camera_gain_adu_per_e: float
    read_noise_e: float
    camera_estimated: _containers.RepeatedScalarFieldContainer[str]
    camera_estimate_frames: int
    def __init__(self, radius_um: _Optional[float] = ..., threshold: _Optional[float] = ..., median_filter: _Optional[bool] = ..., dark_spots: _Optional[bool] = ..., camera_offset_adu: _Optional[float] = ..., camera_gain_adu_per_e: _Optional[float] = ..., read_noise_e: _Optional[float] = ..., camera_estimated: _Optional[_Iterable[str]] = ..., camera_estimate_frames: _Optional[int] = ...) -> None: ...

class LinkerParams(_message.Message):
    __slots__ = ("max_distance_um", "max_gap_frames")
    MAX_DISTANCE_UM_FIELD_NUMBER: _ClassVar[int]
    MAX_GAP_FRAMES_FIELD_NUMBER: _ClassVar[int]
    max_distance_um: float
    max_gap_frames: int
    def __init__(self, max_distance_um: _Optional[float] = ..., max_gap_frames: _Optional[int] = ...) -> None: ...

class WindowParams(_message.Message):
    __slots__ = ("length", "stride")
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    length: int
    stride: int
    def __init__(self, length: _Optional[int] = ..., stride: _Optional[int] = ...) -> None: ...

class ChangeParams(_message.Message):
    __slots__ = ("disabled", "false_alarm_per_1000")
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    FALSE_ALARM_PER_1000_FIELD_NUMBER: _ClassVar[int]
    disabled: bool
    false_alarm_per_1000: float
    def __init__(self, disabled: _Optional[bool] = ..., false_alarm_per_1000: _Optional[float] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "timestamp_s", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    timestamp_s: float
    data: bytes
    def __init__(self, index: _Optional[int] = ..., timestamp_s: _Optional[float] = ..., data: _Optional[bytes] = ...) -> None: ...

class AnalysisUpdate(_message.Message):
    __slots__ = ("started", "frame", "warning", "summary")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    started: SessionStarted
    frame: FrameResult
    warning: Warning
    summary: StreamSummary
    def __init__(self, started: _Optional[_Union[SessionStarted, _Mapping]] = ..., frame: _Optional[_Union[FrameResult, _Mapping]] = ..., warning: _Optional[_Union[Warning, _Mapping]] = ..., summary: _Optional[_Union[StreamSummary, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id", "output_dir", "effective_config_json", "held_frames")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    HELD_FRAMES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    output_dir: str
    effective_config_json: str
    held_frames: int
    def __init__(self, session_id: _Optional[str] = ..., output_dir: _Optional[str] = ..., effective_config_json: _Optional[str] = ..., held_frames: _Optional[int] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("index", "latency_ms", "n_spots", "points", "estimates", "changes")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    N_SPOTS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    index: int
    latency_ms: float
    n_spots: int
    points: _containers.RepeatedCompositeFieldContainer[TrackPoint]
    estimates: _containers.RepeatedCompositeFieldContainer[WindowEstimate]
    changes: _containers.RepeatedCompositeFieldContainer[ChangeEvent]
    def __init__(self, index: _Optional[int] = ..., latency_ms: _Optional[float] = ..., n_spots: _Optional[int] = ..., points: _Optional[_Iterable[_Union[TrackPoint, _Mapping]]] = ..., estimates: _Optional[_Iterable[_Union[WindowEstimate, _Mapping]]] = ..., changes: _Optional[_Iterable[_Union[ChangeEvent, _Mapping]]] = ...) -> None: ...

class TrackPoint(_message.Message):
    __slots__ = ("track_id", "frame", "x_um", "y_um", "precision_um")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    X_UM_FIELD_NUMBER: _ClassVar[int]
    Y_UM_FIELD_NUMBER: _ClassVar[int]
    PRECISION_UM_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    frame: int
    x_um: float
    y_um: float
    precision_um: float
    def __init__(self, track_id: _Optional[int] = ..., frame: _Optional[int] = ..., x_um: _Optional[float] = ..., y_um: _Optional[float] = ..., precision_um: _Optional[float] = ...) -> None: ...

class WindowEstimate(_message.Message):
    __slots__ = ("track_id", "frame_start", "frame_end", "d_um2_s", "d_low_um2_s", "d_high_um2_s", "method")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_START_FIELD_NUMBER: _ClassVar[int]
    FRAME_END_FIELD_NUMBER: _ClassVar[int]
    D_UM2_S_FIELD_NUMBER: _ClassVar[int]
    D_LOW_UM2_S_FIELD_NUMBER: _ClassVar[int]
    D_HIGH_UM2_S_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    frame_start: int
    frame_end: int
    d_um2_s: float
    d_low_um2_s: float
    d_high_um2_s: float
    method: str
    def __init__(self, track_id: _Optional[int] = ..., frame_start: _Optional[int] = ..., frame_end: _Optional[int] = ..., d_um2_s: _Optional[float] = ..., d_low_um2_s: _Optional[float] = ..., d_high_um2_s: _Optional[float] = ..., method: _Optional[str] = ...) -> None: ...

class ChangeEvent(_message.Message):
    __slots__ = ("track_id", "frame", "detected_at_frame", "d_before_um2_s", "d_after_um2_s", "score")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FRAME_FIELD_NUMBER: _ClassVar[int]
    D_BEFORE_UM2_S_FIELD_NUMBER: _ClassVar[int]
    D_AFTER_UM2_S_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    frame: int
    detected_at_frame: int
    d_before_um2_s: float
    d_after_um2_s: float
    score: float
    def __init__(self, track_id: _Optional[int] = ..., frame: _Optional[int] = ..., detected_at_frame: _Optional[int] = ..., d_before_um2_s: _Optional[float] = ..., d_after_um2_s: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class Warning(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class StreamSummary(_message.Message):
    __slots__ = ("frames", "tracks", "track_points", "estimates", "changes", "latency_p50_ms", "latency_p99_ms", "output_dir")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    TRACK_POINTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    frames: int
    tracks: int
    track_points: int
    estimates: int
    changes: int
    latency_p50_ms: float
    latency_p99_ms: float
    output_dir: str
    def __init__(self, frames: _Optional[int] = ..., tracks: _Optional[int] = ..., track_points: _Optional[int] = ..., estimates: _Optional[int] = ..., changes: _Optional[int] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., output_dir: _Optional[str] = ...) -> None: ...

class Track(_message.Message):
    __slots__ = ("track_id", "frames", "x_um", "y_um", "precision_um")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    X_UM_FIELD_NUMBER: _ClassVar[int]
    Y_UM_FIELD_NUMBER: _ClassVar[int]
    PRECISION_UM_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    frames: _containers.RepeatedScalarFieldContainer[int]
    x_um: _containers.RepeatedScalarFieldContainer[float]
    y_um: _containers.RepeatedScalarFieldContainer[float]
    precision_um: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, track_id: _Optional[int] = ..., frames: _Optional[_Iterable[int]] = ..., x_um: _Optional[_Iterable[float]] = ..., y_um: _Optional[_Iterable[float]] = ..., precision_um: _Optional[_Iterable[float]] = ...) -> None: ...

class AnalyzeTracksRequest(_message.Message):
    __slots__ = ("frame_interval_s", "exposure_s", "window", "change", "tracks", "pixel_size_um")
    FRAME_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SIZE_UM_FIELD_NUMBER: _ClassVar[int]
    frame_interval_s: float
    exposure_s: float
    window: WindowParams
    change: ChangeParams
    tracks: _containers.RepeatedCompositeFieldContainer[Track]
    pixel_size_um: float
    def __init__(self, frame_interval_s: _Optional[float] = ..., exposure_s: _Optional[float] = ..., window: _Optional[_Union[WindowParams, _Mapping]] = ..., change: _Optional[_Union[ChangeParams, _Mapping]] = ..., tracks: _Optional[_Iterable[_Union[Track, _Mapping]]] = ..., pixel_size_um: _Optional[float] = ...) -> None: ...

class TrackEstimate(_message.Message):
    __slots__ = ("track_id", "n_spots", "d_um2_s", "d_low_um2_s", "d_high_um2_s", "method")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    N_SPOTS_FIELD_NUMBER: _ClassVar[int]
    D_UM2_S_FIELD_NUMBER: _ClassVar[int]
    D_LOW_UM2_S_FIELD_NUMBER: _ClassVar[int]
    D_HIGH_UM2_S_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    n_spots: int
    d_um2_s: float
    d_low_um2_s: float
    d_high_um2_s: float
    method: str
    def __init__(self, track_id: _Optional[int] = ..., n_spots: _Optional[int] = ..., d_um2_s: _Optional[float] = ..., d_low_um2_s: _Optional[float] = ..., d_high_um2_s: _Optional[float] = ..., method: _Optional[str] = ...) -> None: ...

class AnalyzeTracksResponse(_message.Message):
    __slots__ = ("tracks", "windows", "changes", "warnings")
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    tracks: _containers.RepeatedCompositeFieldContainer[TrackEstimate]
    windows: _containers.RepeatedCompositeFieldContainer[WindowEstimate]
    changes: _containers.RepeatedCompositeFieldContainer[ChangeEvent]
    warnings: _containers.RepeatedCompositeFieldContainer[Warning]
    def __init__(self, tracks: _Optional[_Iterable[_Union[TrackEstimate, _Mapping]]] = ..., windows: _Optional[_Iterable[_Union[WindowEstimate, _Mapping]]] = ..., changes: _Optional[_Iterable[_Union[ChangeEvent, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[Warning, _Mapping]]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "sha256", "device", "variant", "used_for", "parameters", "card_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    USED_FOR_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    sha256: str
    device: str
    variant: str
    used_for: _containers.RepeatedScalarFieldContainer[str]
    parameters: int
    card_json: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., sha256: _Optional[str] = ..., device: _Optional[str] = ..., variant: _Optional[str] = ..., used_for: _Optional[_Iterable[str]] = ..., parameters: _Optional[int] = ..., card_json: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_frame_pixels", "max_sessions", "max_batch_windows", "max_batch_delay_ms", "max_window_frames", "max_gap_frames", "max_name_chars", "max_track_points", "stream_idle_s")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_WINDOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_GAP_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_NAME_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_TRACK_POINTS_FIELD_NUMBER: _ClassVar[int]
    STREAM_IDLE_S_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_frame_pixels: int
    max_sessions: int
    max_batch_windows: int
    max_batch_delay_ms: float
    max_window_frames: int
    max_gap_frames: int
    max_name_chars: int
    max_track_points: int
    stream_idle_s: float
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_frame_pixels: _Optional[int] = ..., max_sessions: _Optional[int] = ..., max_batch_windows: _Optional[int] = ..., max_batch_delay_ms: _Optional[float] = ..., max_window_frames: _Optional[int] = ..., max_gap_frames: _Optional[int] = ..., max_name_chars: _Optional[int] = ..., max_track_points: _Optional[int] = ..., stream_idle_s: _Optional[float] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "device", "models", "estimators", "trackers", "limits", "active_sessions")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATORS_FIELD_NUMBER: _ClassVar[int]
    TRACKERS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    version: str
    device: str
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    estimators: _containers.RepeatedScalarFieldContainer[str]
    trackers: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    active_sessions: int
    def __init__(self, version: _Optional[str] = ..., device: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., estimators: _Optional[_Iterable[str]] = ..., trackers: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., active_sessions: _Optional[int] = ...) -> None: ...

class LocalizeRequest(_message.Message):
    __slots__ = ("pixel_type", "height", "width", "data", "pixel_size_um", "samples", "sampler", "steps", "seed", "threshold", "first_frame", "camera_offset_adu", "camera_gain_adu_per_e")
    PIXEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SIZE_UM_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    CAMERA_OFFSET_ADU_FIELD_NUMBER: _ClassVar[int]
    CAMERA_GAIN_ADU_PER_E_FIELD_NUMBER: _ClassVar[int]
    pixel_type: PixelType
    height: int
    width: int
    data: bytes
    pixel_size_um: float
    samples: int
    sampler: Sampler
    steps: int
    seed: int
    threshold: float
    first_frame: int
    camera_offset_adu: float
    camera_gain_adu_per_e: float
    def __init__(self, pixel_type: _Optional[_Union[PixelType, str]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., data: _Optional[bytes] = ..., pixel_size_um: _Optional[float] = ..., samples: _Optional[int] = ..., sampler: _Optional[_Union[Sampler, str]] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., threshold: _Optional[float] = ..., first_frame: _Optional[int] = ..., camera_offset_adu: _Optional[float] = ..., camera_gain_adu_per_e: _Optional[float] = ...) -> None: ...

class Emitter(_message.Message):
    __slots__ = ("frame", "x_um", "y_um", "x_sd_um", "y_sd_um", "photons", "peak")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    X_UM_FIELD_NUMBER: _ClassVar[int]
    Y_UM_FIELD_NUMBER: _ClassVar[int]
    X_SD_UM_FIELD_NUMBER: _ClassVar[int]
    Y_SD_UM_FIELD_NUMBER: _ClassVar[int]
    PHOTONS_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    frame: int
    x_um: float
    y_um: float
    x_sd_um: float
    y_sd_um: float
    photons: float
    peak: float
    def __init__(self, frame: _Optional[int] = ..., x_um: _Optional[float] = ..., y_um: _Optional[float] = ..., x_sd_um: _Optional[float] = ..., y_sd_um: _Optional[float] = ..., photons: _Optional[float] = ..., peak: _Optional[float] = ...) -> None: ...

class LocalizeResponse(_message.Message):
    __slots__ = ("frames", "height", "width", "upsample", "mean", "variance", "emitters", "warnings", "model")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    UPSAMPLE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    EMITTERS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    frames: int
    height: int
    width: int
    upsample: int
    mean: bytes
    variance: bytes
    emitters: _containers.RepeatedCompositeFieldContainer[Emitter]
    warnings: _containers.RepeatedCompositeFieldContainer[Warning]
    model: str
    def __init__(self, frames: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., upsample: _Optional[int] = ..., mean: _Optional[bytes] = ..., variance: _Optional[bytes] = ..., emitters: _Optional[_Iterable[_Union[Emitter, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[Warning, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...
