"""van_edu: the shared code of the Visual Attention Network course.

Data flows one way: ``data`` -> ``models`` -> ``train`` -> ``complexity`` / ``viz``
-> notebooks and the ``van-edu`` command. ``lka`` knows nothing of training,
``models`` nothing of data.
"""
from .errors import VanEduError

__version__ = "0.1.0"
__all__ = ["VanEduError", "__version__"]
