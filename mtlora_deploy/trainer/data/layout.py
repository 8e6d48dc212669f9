"""The PASCAL-MT file layout and label constants, in one place so readers and the synthetic writer agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

TASKS: tuple[str, ...] = ("semseg", "human_parts", "sal", "normals", "edge")
SPLITS: tuple[str, ...] = ("train", "val")
IGNORE_INDEX = 255
PERSON_CLASS_IND = 15
NUM_SEMSEG_CLASSES = 21
NUM_HUMAN_PARTS = 7

# The 170 PASCAL-Context (459-class) indices shared with NYU, plus tvmonitor: normals are kept only there.
NORMALS_VALID_CLASSES: frozenset[int] = frozenset(
    int(v)
    for v in """
    3 4 6 9 10 11 13 15 17 18 22 23 29 30 33 34 36 37 38 39 41 43 46 49 50 51 53 55
    56 59 61 62 65 66 68 69 72 73 78 83 84 85 87 88 95 96 101 104 105 107 111 113
    115 122 124 135 141 142 143 146 150 154 157 158 159 165 172 174 181 183 184 191
    193 195 197 199 202 213 215 216 219 220 223 225 228 230 232 233 238 239 242 243
    246 250 251 252 255 260 261 263 269 272 273 275 281 283 284 285 286 287 288 290
    291 292 293 295 304 307 309 310 314 315 319 323 329 330 331 336 342 345 349 350
    351 352 355 357 368 370 371 374 379 380 383 384 397 401 403 405 407 408 411 412
    413 414 417 419 421 423 427 429 430 432 440 441 442 443 444 446 454 457
    """.split()
)

# PASCAL-Part person part names grouped into the 6 human-parts classes (index + 1 is the class; 0 = background).
HUMAN_PART_GROUPS: tuple[tuple[str, ...], ...] = (
    ("hair", "head", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "mouth", "nose"),
    ("neck", "torso"),
    ("luarm", "ruarm"),
    ("llarm", "rlarm", "lhand", "rhand"),
    ("luleg", "ruleg"),
    ("llleg", "rlleg", "lfoot", "rfoot"),
)
HUMAN_PART_CLASSES: tuple[str, ...] = (
    "background",
    "head",
    "torso",
    "upper_arm",
    "lower_arm",
    "upper_leg",
    "lower_leg",
)
PART_NAME_TO_ID: MappingProxyType[str, int] = MappingProxyType(
    {name: group + 1 for group, names in enumerate(HUMAN_PART_GROUPS) for name in names}
)

# File source -> (folder under the root, file suffix).
SOURCES: MappingProxyType[str, tuple[str, str]] = MappingProxyType(
    {
        "image": ("JPEGImages", ".jpg"),
        "semseg_voc": ("semseg/VOC12", ".png"),
        "semseg_context": ("semseg/pascal-context", ".png"),
        "human_parts": ("human_parts", ".mat"),
        "normals": ("normals_distill", ".png"),
        "sal": ("sal_distill", ".png"),
        "label_map": ("pascal-context/trainval", ".mat"),
    }
)

# Task -> the files it needs; each entry lists alternative sources, the first existing one wins.
TASK_SOURCES: MappingProxyType[str, tuple[tuple[str, ...], ...]] = MappingProxyType(
    {
        "image": (("image",),),
        "semseg": (("semseg_voc", "semseg_context"),),
        "human_parts": (("human_parts",),),
        "sal": (("sal",),),
        "normals": (("normals",), ("label_map",)),
        "edge": (("label_map",),),
    }
)


@dataclass(frozen=True)
class PascalLayout:
    """Paths of one PASCAL-MT root; pure path arithmetic, it never touches the disk except to pick alternatives."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def path(self, source: str, image_id: str) -> Path:
        """The file of ``source`` (a key of :data:`SOURCES`) for one image id."""
        folder, suffix = SOURCES[source]
        return self.root / folder / f"{image_id}{suffix}"

    def resolve(self, sources: tuple[str, ...], image_id: str) -> Path:
        """The first existing file among alternative sources (the first one if none exists, for the error)."""
        paths = [self.path(source, image_id) for source in sources]
        return next((p for p in paths if p.is_file()), paths[0])

    def split_file(self, split: str) -> Path:
        """The id list of a split (``ImageSets/Context/<split>.txt``)."""
        return self.root / "ImageSets" / "Context" / f"{split}.txt"

    def image(self, image_id: str) -> Path:
        """The RGB input image."""
        return self.path("image", image_id)

    def semseg(self, image_id: str) -> Path:
        """The semseg png: ``semseg/VOC12`` is preferred, ``semseg/pascal-context`` is the fallback."""
        return self.resolve(TASK_SOURCES["semseg"][0], image_id)

    def human_parts(self, image_id: str) -> Path:
        """The PASCAL-Part ``anno`` struct."""
        return self.path("human_parts", image_id)

    def normals(self, image_id: str) -> Path:
        """The distilled surface normals png."""
        return self.path("normals", image_id)

    def sal(self, image_id: str) -> Path:
        """The distilled saliency png."""
        return self.path("sal", image_id)

    def label_map(self, image_id: str) -> Path:
        """The 459-class PASCAL-Context ``LabelMap`` (normals mask and edges)."""
        return self.path("label_map", image_id)
