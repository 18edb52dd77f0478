"""A decider from outside lm_router_plugin (registered by its dist-info's entry point in
the group ``lm_router.deciders``): the allowed model of highest S1, kept only when its S1
exceeds the S1 of the best model on average (BMA) by more than ``margin``, else BMA."""

from __future__ import annotations

import numpy as np

from lm_router_plugin.router.deciders import Decider, Decision, TaskView


class MarginDecider(Decider):
    name = "margin"
    title = "S1 with a margin (plugin)"
    margin = 0.02  # tests change it on the class

    def decide(self, view: TaskView) -> Decision:
        s1, bma = view.scores.s1, view.bma
        values = np.where(view.allowed, s1, -np.inf)
        best = int(np.argmax(values))
        lead = float(values[best] - s1[bma])
        keep = best == bma or lead > self.margin
        choice = best if keep else bma
        if best == bma:
            reason = f"{view.models[bma]} has the highest S1 and is the best model on average"
        elif keep:
            reason = (f"{view.models[best]}'s S1 is {lead:+.3f} above {view.models[bma]}'s, "
                      f"more than the margin {self.margin}")
        else:
            reason = (f"{view.models[best]}'s S1 is only {lead:+.3f} above "
                      f"{view.models[bma]}'s (margin {self.margin}): kept the best model on "
                      "average")
        return Decision(choice=choice, best_by_score=best, bma=bma, fallback=not keep,
                        p_beats_bma=0.5 if best == bma else float(keep), scores=values,
                        reason=reason, decided_by=self.name,
                        details={"margin": self.margin, "lead": lead})
