"""The ground floor: what every other part of ser-triton shares, importing nothing of them.

`contract` names the served ensemble (labels, sample rate, tensors, limits, ports); `glossary` the
networks; `specs` every tensor of every served model; `audio` reads and prepares audio as the
server wants it; `result` holds what a classification returns.
"""
