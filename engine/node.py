"""How a node type is declared: typed inputs on the class, typed outputs on `execute`'s return.

    class EmptyLatentImage(Node):
        class_type = "EmptyLatentImage"
        width: int = Widget(512, ge=16, le=16384, step=8)
        ...
        def execute(self, ctx: NodeContext) -> LatentOut: ...

Field order is the ComfyUI declaration order (required inputs first, then optional), which is
what UI `widgets_values` map onto. The engine only ever sees the derived `NodeSpec`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, get_args, get_origin



class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # "no default"; dataclasses.MISSING cannot be stored as a field default

# ComfyUI's names for the primitive widget types; edge types name themselves via `comfy_type`.
PRIMITIVE_TYPES: dict[type, str] = {int: "INT", float: "FLOAT", str: "STRING", bool: "BOOLEAN"}
WIDGET_TYPES = frozenset(PRIMITIVE_TYPES.values()) | {"COMBO"}


class EdgeValue:
    """Base of values that travel along links (latents, images, model handles...)."""

    comfy_type: ClassVar[str] = "*"


@dataclass(frozen=True)
class InputSpec:
    """Everything the engine knows about one input; built from a `Widget()` or `Link()` field."""

    name: str
    type_name: str  # "INT", "COMBO", "LATENT", or a comma union such as "IMAGE,FLOAT"
    is_widget: bool
    is_required: bool = True
    default: Any = MISSING
    ge: float | None = None
    le: float | None = None
    step: float | None = None
    multiple_of: int | None = None
    choices: tuple | Callable[[Any], list] | None = None  # a callable gets the validation context
    multiline: bool = False
    control_after_generate: bool = False
    literal_types: tuple[type, ...] = ()  # constants a link input accepts instead of a link
    check: Callable[[Any, Any], str | None] | None = None  # (value, ValidationContext) -> problem or None
    tooltip: str | None = None
    # run-graph's own addition to a ComfyUI node: workflows saved from ComfyUI never hold it, so
    # filling in its default is no news worth a warning.
    is_extension: bool = False
    # For the web UI only: extra widget options (`image_upload`), and the list a free-text
    # input offers there (LoadImage: the input folder's images) without being limited to it.
    ui: dict | None = None
    ui_choices: Callable[[Any], list] | None = None
    # ComfyUI's `dynamicPrompts`: the frontend resolves {a|b} and strips comments before queuing
    dynamic_prompts: bool = False

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    def to_info(self) -> dict:
        """An `object_info`-like description of this input."""
        options: dict[str, Any] = {}
        for key in ("ge", "le", "step", "multiple_of"):
            if getattr(self, key) is not None:
                options[{"ge": "min", "le": "max"}.get(key, key)] = getattr(self, key)
        if self.has_default:
            options["default"] = self.default
        if self.multiline:
            options["multiline"] = True
        if self.dynamic_prompts:
            options["dynamicPrompts"] = True
        if self.control_after_generate:
            options["control_after_generate"] = True
        if isinstance(self.choices, tuple):
            options["options"] = list(self.choices)
        elif self.choices is not None:
            options["options"] = "<files found at validation time>"
        if self.tooltip:
            options["tooltip"] = self.tooltip
        return {"type": self.type_name, **options}


@dataclass
class _FieldMarker:
    is_widget: bool
    kwargs: dict = field(default_factory=dict)


def Widget(default: Any = MISSING, *, ge: float | None = None, le: float | None = None,  # noqa: N802
           step: float | None = None, multiple_of: int | None = None,
           choices: tuple | Callable | None = None, multiline: bool = False,
           control_after_generate: bool | None = None, optional: bool = False,
           check: Callable | None = None, tooltip: str | None = None, extension: bool = False,
           ui: dict | None = None, ui_choices: Callable | None = None, dynamic_prompts: bool = False) -> Any:
    """A constant input edited in the UI. `control_after_generate=None` means ComfyUI's rule:
    INT inputs named seed/noise_seed get the UI-only companion widget. `check(value, vctx)` and a
    callable `choices(vctx)` get the ValidationContext. `extension`: not in ComfyUI's node."""
    return _FieldMarker(True, dict(default=default, ge=ge, le=le, step=step, multiple_of=multiple_of,
                                   choices=choices, multiline=multiline,
                                   control_after_generate=control_after_generate,
                                   optional=optional, check=check, tooltip=tooltip,
                                   is_extension=extension, ui=ui, ui_choices=ui_choices,
                                   dynamic_prompts=dynamic_prompts))


def Link(*, optional: bool = False, tooltip: str | None = None) -> Any:  # noqa: N802
    """An input that receives another node's output (a socket)."""
    return _FieldMarker(False, dict(optional=optional, tooltip=tooltip))


class NodeOutput:
    """Base of node results: a frozen dataclass whose fields are the output slots, in order.
    Fields with `metadata={"slot": False}` are side information (files written), not slots."""


class ItemList(tuple):
    """ComfyUI's list on an output slot (not a tensor batch): what an `output_is_list` slot gives,
    or a node run once per item of a list it got. A node downstream runs once per item, unless it
    takes whole lists (`input_is_list`)."""

    def __repr__(self) -> str:
        return f"ItemList({list(self)!r})"


@dataclass(frozen=True)
class SavedFiles(NodeOutput):
    """What an output node returns: the files it wrote. Not a slot; no node can link to it.
    The engine adds each file's stamp (bytes, mtime_ns, sha256) when the node returns, so that a
    cached result is only trusted while its files are intact."""

    files: tuple[str, ...] = field(default=(), metadata={"slot": False})
    stamps: tuple[tuple[int, int, str], ...] = field(default=(), metadata={"slot": False})

    def intact(self) -> bool:
        from .file_hashes import is_intact

        return len(self.stamps) == len(self.files) and all(map(is_intact, self.files, self.stamps))


@dataclass(frozen=True)
class ShownText(NodeOutput):
    """What an output node shows as text (ComfyUI's `ui: {"text": …}`): reported by the server
    and the CLI, not a slot."""

    text: tuple[str, ...] = field(default=(), metadata={"slot": False})


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type_name: str


@dataclass(frozen=True)
class NodeSpec:
    class_type: str
    display_name: str
    category: str
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    output_fields: tuple[str, ...]
    is_output_node: bool
    is_idempotent: bool
    version: str
    input_is_list: bool = False
    output_is_list: tuple[bool, ...] = ()

    def input(self, name: str) -> InputSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def to_info(self) -> dict:
        def section(required: bool) -> dict:
            return {i.name: i.to_info() for i in self.inputs if i.is_required == required}
        return {
            "name": self.class_type, "display_name": self.display_name, "category": self.category,
            "description": self.description,
            "input": {"required": section(True), "optional": section(False)},
            "input_order": {"required": [i.name for i in self.inputs if i.is_required],
                            "optional": [i.name for i in self.inputs if not i.is_required]},
            "output": [o.type_name for o in self.outputs],
            "output_name": [o.name for o in self.outputs],
            "output_is_list": list(self.output_is_list),
            "output_node": self.is_output_node,
        }


class Node:
    """Base class of node types. Subclasses declare inputs as class fields and implement `execute`.

    Hooks (all optional, all classmethods, all see constants only, never upstream results):
    - `fingerprint(constants, settings)`: extra data for the cache key, e.g. the hash of a file read.
    - `check_inputs(constants, linked_types, vctx)`: custom validation, returns [(input, message)].
    """

    class_type: ClassVar[str]
    display_name: ClassVar[str | None] = None
    category: ClassVar[str] = ""
    is_output_node: ClassVar[bool] = False
    # False: the node has effects or reads state the engine cannot see, so it always re-runs.
    is_idempotent: ClassVar[bool] = True
    # Bump when a change to `execute` changes results, so that persisted cache entries miss.
    version: ClassVar[str] = "1"
    # True for nodes that pick model files: their fingerprints (file hashes) go into provenance,
    # and batches run workflows that pick the same ones together.
    loads_models: ClassVar[bool] = False
    # Output names shown to UIs where they differ from the NodeOutput's field names (ComfyUI's
    # RETURN_NAMES), so that nodes can share one output class.
    output_names: ClassVar[tuple[str, ...] | None] = None
    # ComfyUI's INPUT_IS_LIST: execute() runs once and every input holds a list (a constant as a
    # list of one); otherwise a node given ItemLists runs once per item (engine.lists).
    input_is_list: ClassVar[bool] = False
    # ComfyUI's OUTPUT_IS_LIST: which slots hold an ItemList rather than one value per run.
    output_is_list: ClassVar[tuple[bool, ...] | None] = None
    spec: ClassVar[NodeSpec]

    def __init__(self, **inputs: Any) -> None:
        """Build a node directly (tests, scripts): `EmptyLatentImage(width=64, height=64)`.
        Unset inputs take their defaults; unknown or missing required ones raise TypeError."""
        spec = type(self).spec
        unknown = set(inputs) - {i.name for i in spec.inputs}
        if unknown:
            raise TypeError(f"{spec.class_type} has no input(s) {', '.join(sorted(unknown))}")
        for item in spec.inputs:
            if item.name in inputs:
                value = inputs[item.name]
            elif item.has_default:
                value = item.default
            elif not item.is_required:
                value = None
            else:
                raise TypeError(f"{spec.class_type} needs input {item.name!r}")
            self.__dict__[item.name] = value

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "class_type" in cls.__dict__:
            cls.spec = _build_spec(cls)

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], settings: Any) -> Any:
        return None

    @classmethod
    def check_inputs(cls, constants: dict[str, Any], linked_types: dict[str, str],
                     vctx: Any) -> list[tuple[str | None, str]]:
        """Extra checks on constants and the types linked in; `vctx` is the ValidationContext
        (settings, and `warn()` for what is worth saying but not an error)."""
        return []

    def execute(self, ctx: Any) -> NodeOutput:
        raise NotImplementedError


def _type_name(annotation: Any) -> tuple[str, tuple[type, ...], tuple | None, bool]:
    """Map an annotation to (ComfyUI type, literal python types, combo choices, is_optional)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "COMBO", (str,), tuple(get_args(annotation)), False
    if origin in (typing.Union, types.UnionType):
        names, literals, is_optional = [], [], False
        for arg in get_args(annotation):
            if arg is type(None):
                is_optional = True
                continue
            name, lits, _, _ = _type_name(arg)
            names.append(name)
            literals.extend(lits)
        return ",".join(names), tuple(literals), None, is_optional
    if annotation in PRIMITIVE_TYPES:
        return PRIMITIVE_TYPES[annotation], (annotation,), None, False
    if isinstance(annotation, type) and issubclass(annotation, EdgeValue):
        return annotation.comfy_type, (), None, False
    raise TypeError(f"unsupported input annotation {annotation!r}")


def _build_spec(cls: type[Node]) -> NodeSpec:
    hints = typing.get_type_hints(cls)
    inputs: list[InputSpec] = []
    names_in_order = [n for klass in reversed(cls.__mro__) for n in vars(klass)
                      if isinstance(vars(klass)[n], _FieldMarker)]
    for name in dict.fromkeys(names_in_order):
        marker: _FieldMarker = getattr(cls, name)
        type_name, literal_types, literal_choices, is_nullable = _type_name(hints[name])
        kw = dict(marker.kwargs)
        is_required = not (kw.pop("optional") or is_nullable)
        if marker.is_widget:
            choices = kw.pop("choices") or literal_choices
            if choices is not None:
                type_name = "COMBO"
            cag = kw.pop("control_after_generate")
            if cag is None:
                cag = type_name == "INT" and name in ("seed", "noise_seed")
            inputs.append(InputSpec(name, type_name, True, is_required, choices=choices,
                                    control_after_generate=cag, literal_types=literal_types, **kw))
        else:
            literal_types = tuple(t for t in literal_types if t in PRIMITIVE_TYPES)
            inputs.append(InputSpec(name, type_name, False, is_required, literal_types=literal_types,
                                    default=None if not is_required else MISSING, **kw))
    # Required inputs come first, as in ComfyUI's INPUT_TYPES; the order within each is kept.
    inputs.sort(key=lambda i: not i.is_required)

    out_cls = typing.get_type_hints(cls.execute).get("return")
    if out_cls is None or not (isinstance(out_cls, type) and issubclass(out_cls, NodeOutput)):
        raise TypeError(f"{cls.__name__}.execute must be annotated to return a NodeOutput subclass")
    outputs, output_fields = [], []
    out_hints = typing.get_type_hints(out_cls)
    for f in dataclasses.fields(out_cls):
        if f.metadata.get("slot", True):
            outputs.append(OutputSpec(f.name, _type_name(out_hints[f.name])[0]))
            output_fields.append(f.name)
    if cls.output_names is not None:
        if len(cls.output_names) != len(outputs):
            raise TypeError(f"{cls.__name__}.output_names names {len(cls.output_names)} of {len(outputs)} outputs")
        outputs = [OutputSpec(name, o.type_name) for name, o in zip(cls.output_names, outputs)]
    output_is_list = cls.output_is_list or (False,) * len(outputs)
    if len(output_is_list) != len(outputs):
        raise TypeError(f"{cls.__name__}.output_is_list has {len(output_is_list)} of {len(outputs)} outputs")
    return NodeSpec(
        class_type=cls.class_type, display_name=cls.display_name or cls.class_type,
        category=cls.category, description=(cls.__doc__ or "").strip().split("\n")[0],
        inputs=tuple(inputs), outputs=tuple(outputs), output_fields=tuple(output_fields),
        is_output_node=cls.is_output_node, is_idempotent=cls.is_idempotent, version=cls.version,
        input_is_list=cls.input_is_list, output_is_list=tuple(output_is_list))
