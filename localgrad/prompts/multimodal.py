"""Text around the fields of multimodal calls."""

FIELD_LABEL = "{field}: "
