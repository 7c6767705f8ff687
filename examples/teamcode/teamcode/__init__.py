"""A team's own scikit-learn transformers and estimators (an example modelfleet can run)."""

from teamcode.regressors import ShrunkLinearRegressor
from teamcode.transformers import QuantileClipper

__all__ = ["QuantileClipper", "ShrunkLinearRegressor"]
