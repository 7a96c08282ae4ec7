"""genrec: prompt-based generative recommendation.

    from genrec import Recommender, Catalog
    rec = Recommender(catalog=Catalog.from_file("items.csv"))   # the embedded default model
    rec.recommend(history=["50", "181"], k=10)
"""

from .catalog import Catalog, LoadReport
from .content import ContentScores
from .errors import (
    CatalogError,
    ConfigError,
    DataError,
    DeadlineError,
    GenrecError,
    IndexCacheError,
    LimitError,
    MissingDependencyError,
    ModelNotFoundError,
    PriorError,
    VocabularyError,
    SecurityError,
    TemplateError,
    UnknownItemError,
)
from .grounding import Match, Mention
from .limits import Limits
from .recommender import Recommender
from .tasks import ChatResponse, Explanation, Recommendation, Recommendations
from .tasks.content_search import ContentSearch
from .tasks.prior import Prior

__all__ = [
    "Recommender",
    "Catalog",
    "Recommendation",
    "Recommendations",
    "Explanation",
    "ChatResponse",
    "Match",
    "Mention",
    "Limits",
    "Prior",
    "ContentSearch",
    "ContentScores",
    "LoadReport",
    "GenrecError",
    "CatalogError",
    "TemplateError",
    "SecurityError",
    "UnknownItemError",
    "ModelNotFoundError",
    "MissingDependencyError",
    "LimitError",
    "IndexCacheError",
    "DataError",
    "PriorError",
    "VocabularyError",
    "ConfigError",
    "DeadlineError",
]

__version__ = "0.1.0"
