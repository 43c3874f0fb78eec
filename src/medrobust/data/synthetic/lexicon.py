"""Words of the synthetic reports: synonyms, negations, hedges and phrase templates per finding.

Written by hand. The lexicon is public so tests (and text-side corruptions) can check what a report
says: every *stated* or *hedged* mention of a finding contains one of its :data:`SYNONYMS`, every
*negation* is one of its :data:`NEGATIONS`, and every hedged mention carries one of the
:data:`HEDGE_CUES` in the same sentence. Matching is case-insensitive substring matching; no filler or
normal statement contains any of these strings.

Templates use ``str.format`` fields: ``{syn}`` (a synonym), ``{loc}`` (lung location), ``{size}``,
``{side}``, ``{grade}`` / ``{gradely}`` (mild / mildly), ``{art}`` / ``{be}`` (article / verb agreeing
with a bilateral plural). Prose styles (sites A, B, C) share :data:`PROSE`; site D writes
:data:`ABBREV` shorthand.
"""

from __future__ import annotations

SYNONYMS: dict[str, tuple[str, ...]] = {
    "nodule": ("nodule", "nodular opacity", "nodular density", "rounded density", "rounded opacity", "nod"),
    "effusion": ("effusion", "pleural fluid", "eff"),
    "cardiomegaly": ("cardiomegaly", "enlarged", "enlargement", "cmg"),
    "consolidation": ("consolidation", "airspace opacity", "airspace disease", "patchy opacity", "infiltrate",
                      "consol", "airspace dz"),
}

NEGATIONS: dict[str, tuple[str, ...]] = {
    "nodule": ("no suspicious pulmonary nodule", "no pulmonary nodules", "no nodule or mass", "no nod"),
    "effusion": ("no pleural effusion", "no effusion", "costophrenic angles are sharp", "no eff", "cpas sharp",
                 "no pl eff"),
    "cardiomegaly": ("heart size is normal", "normal heart size", "heart size is within normal limits",
                     "cardiomediastinal silhouette is within normal limits", "no cardiomegaly", "heart nl",
                     "nl heart sz", "heart normal", "no cmg"),
    "consolidation": ("no focal consolidation", "no consolidation", "no focal airspace disease", "no consol",
                      "no focal consol", "without focal consolidation"),
}

HEDGE_CUES = ("poss", "cannot exclude", "cannot be excluded", "questionable", "may represent", "may be", "?",
              "suspect", "equivocal", "borderline")

# --- prose synonyms used when writing (subsets of SYNONYMS) ---
PROSE_SYN = {
    "nodule": ("nodule", "nodular opacity", "nodular density", "rounded density", "rounded opacity",
               "pulmonary nodule"),
    "effusion": ("pleural effusion", "effusion", "pleural fluid collection"),
    "effusion_plural": ("pleural effusions", "effusions", "pleural fluid collections"),
    "consolidation": ("consolidation", "airspace opacity", "airspace disease", "patchy opacity", "infiltrate"),
}

PROSE: dict[str, dict[str, tuple[str, ...]]] = {
    "nodule": {
        "stated": ("There is a {size} {syn} in the {loc}.", "A {size} {syn} projects over the {loc}.",
                   "{size} {syn} in the {loc}.", "{loc} {syn} measuring {size}.",
                   "Well-circumscribed {size} {syn} in the {loc}."),
        "hedged": ("Possible {syn} in the {loc}.", "A small {syn} in the {loc} cannot be excluded.",
                   "Questionable {size} {syn} in the {loc}.", "Subtle focus in the {loc} may represent a {syn}.",
                   "Cannot exclude a {syn} in the {loc}."),
        "negated": ("No suspicious pulmonary nodules.", "No pulmonary nodules.", "No nodule or mass."),
    },
    "effusion": {
        "stated": ("There {be} {art}{size} {side} {syn}.", "{size} {side} {syn}.",
                   "Blunting of the {side} costophrenic angle{s} from {art}{size} {syn}.",
                   "{side} {syn}, {size}.", "{size} {side} {syn} layering dependently."),
        "hedged": ("Possible {size} {side} {syn}.", "Small {side} {syn} cannot be excluded.",
                   "Blunting of the {side} costophrenic angle{s}, possibly {art}small {syn}.",
                   "Questionable {side} {syn}."),
        "negated": ("No pleural effusion.", "No pleural effusion or pneumothorax.", "No effusion.",
                    "Costophrenic angles are sharp."),
    },
    "cardiomegaly": {
        "stated": ("{grade} cardiomegaly.", "The cardiac silhouette is {gradely} enlarged.",
                   "The heart is {gradely} enlarged.", "{grade} enlargement of the cardiac silhouette.",
                   "Heart size is {gradely} enlarged."),
        "hedged": ("Possible {grade} cardiomegaly.", "Borderline heart size, cannot exclude mild cardiomegaly.",
                   "The cardiac silhouette may be mildly enlarged.", "Questionable mild cardiomegaly."),
        "negated": ("Heart size is normal.", "Normal heart size.", "Heart size is within normal limits.",
                    "The cardiomediastinal silhouette is within normal limits.", "No cardiomegaly."),
    },
    "consolidation": {
        "stated": ("Patchy airspace opacity in the {loc} consistent with consolidation.", "{loc} {syn}.",
                   "Focal {syn} in the {loc}.", "There is {syn} in the {loc}.",
                   "{syn} in the {loc}, compatible with pneumonia."),
        "hedged": ("Possible early {syn} in the {loc}.", "Subtle opacity in the {loc}, cannot exclude {syn}.",
                   "Questionable {syn} in the {loc}.", "Hazy density in the {loc} may represent {syn}."),
        "negated": ("No focal consolidation.", "No focal airspace disease.", "No consolidation."),
    },
}

ABBREV: dict[str, dict[str, tuple[str, ...]]] = {
    "nodule": {
        "stated": ("{size} nod {loc}", "nod {loc} {size}", "{loc} nodule {size}", "{loc} nod ({size})"),
        "hedged": ("? nod {loc}", "poss nod {loc}", "?{size} nod {loc}"),
        "negated": ("no nod", "no nods"),
    },
    "effusion": {
        "stated": ("{side} eff {size}", "{size} {side} eff", "{side} pl eff {size}", "{side} eff ({size})"),
        "hedged": ("? {side} eff", "poss sm {side} eff", "?sm {side} eff"),
        "negated": ("no eff", "CPAs sharp", "no pl eff"),
    },
    "cardiomegaly": {
        "stated": ("CMG {grade}", "{grade} CMG", "CMG ({grade})"),
        "hedged": ("? CMG", "poss mild CMG", "borderline CMG"),
        "negated": ("heart nl", "nl heart sz", "no CMG"),
    },
    "consolidation": {
        "stated": ("consol {loc}", "{loc} consol", "{loc} airspace dz"),
        "hedged": ("? consol {loc}", "poss early consol {loc}", "?{loc} consol"),
        "negated": ("no consol", "no focal consol"),
    },
}

# --- attributes in words ---
SIDE_WORDS = {1: ("right",), 2: ("left",), 3: ("bilateral",)}
SIDE_ABBREV = {1: ("R", "rt"), 2: ("L", "lt"), 3: ("bilat", "B/L")}
EFF_SIZE_WORDS = {1: ("small", "small-volume", "trace to small"), 2: ("moderate", "moderate-sized"),
                  3: ("large", "sizable")}
EFF_SIZE_ABBREV = {1: ("sm",), 2: ("mod",), 3: ("lg",)}
GRADE_WORDS = {1: ("mild",), 2: ("moderate",)}
GRADELY_WORDS = {1: ("mildly",), 2: ("moderately",)}
GRADE_ABBREV = {1: ("mild",), 2: ("mod",)}


def location_words(side: int, zone: int) -> tuple[str, ...]:
    """Ways to name a lung location (``side`` 1 right / 2 left, ``zone`` 1 upper / 2 lower)."""
    s = "right" if side == 1 else "left"
    if zone == 1:
        return (f"{s} upper lobe", f"{s} upper zone", f"{s} apex", f"{s} upper lung")
    return (f"{s} lower lobe", f"{s} lower zone", f"{s} lung base", f"{s} base")


def location_abbrev(side: int, zone: int) -> tuple[str, ...]:
    """Shorthand lung locations: RUL, RLL, LUL, LLL, R base, ..."""
    s = "R" if side == 1 else "L"
    return (f"{s}{'U' if zone == 1 else 'L'}L", f"{s} {'apex' if zone == 1 else 'base'}")


# --- normal statements and filler (contain no synonym, negation or hedge cue) ---
LUNGS_CLEAR = ("The lungs are clear.", "Lungs are clear.", "Clear lungs.", "The lungs are well expanded and clear.")
LUNGS_CLEAR_ABBREV = ("lungs clr", "lungs clear")
NORMAL_IMPRESSION = ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
                     "Normal chest radiograph.", "No radiographic evidence of acute disease.")
NORMAL_TERSE = ("Normal chest.", "No acute disease.", "Unremarkable chest.")
NORMAL_ABBREV = ("NAD", "no acute CP process", "nl CXR")
FILLER = ("No pneumothorax.", "The osseous structures are intact.", "No acute osseous abnormality.",
          "Mild degenerative changes of the thoracic spine.", "The trachea is midline.",
          "Surgical clips in the right upper quadrant.", "Healed right rib fracture.",
          "Calcified granuloma is stable.", "Aortic knob calcification.", "Visualized upper abdomen is unremarkable.")
FILLER_ABBREV = ("no ptx", "bones ok", "DJD T-spine", "trachea midline", "old R rib fx")
ICU_LINES = ("Endotracheal tube tip {n} cm above the carina.", "Right internal jugular catheter tip in the SVC.",
             "Enteric tube courses below the diaphragm.", "Left PICC terminates in the SVC.",
             "Cardiac monitoring leads overlie the chest.", "Right chest tube in place, unchanged.",
             "Tracheostomy tube in standard position.")
INDICATIONS = ("cough", "shortness of breath", "fever", "chest pain", "pre-operative evaluation", "follow-up",
               "hypoxia", "weakness", "history of smoking", "dyspnea on exertion", "routine screening")
