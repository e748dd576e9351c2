"""dalib: the library behind the depth-anything-course notebooks.

Math in `disparity`, `losses`, `metrics`; the network in `model`; pixels and files in `synth` and
`data`; orchestration in `pipeline`. Command line: `python -m dalib {predict,pipeline,data} ...`.
"""
__version__ = "0.1.0"
