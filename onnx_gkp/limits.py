"""The limits more than one stage reads: one place, so they cannot drift apart."""

# plan
MAX_LAYER_RATIO = 0.75  # no layer loses more than 3/4 of its input channels
DEFAULT_KEEP = 0.99  # with real inputs and no target: keep 99% top-1 agreement (or cosine) on held-out ones

# model files
PROTOBUF_LIMIT = 2**31 - 1  # bytes: protobuf cannot serialise a larger message
EXTERNAL_MIN = 1024  # bytes: initializers at least this large go to the .data file
STRIPPED = "gkp-stripped"  # location of tensors left out of a skeleton

# validation
WHOLE_LIMIT = 2**30  # bytes of weights up to which validation runs whole models and times them
PART_BYTES = 2**27  # bytes of weights in one part past it
