from edge.core.session import Event, Session, Timeouts, step


def run(events, s=None, t0=0.0):
    s = s or Session("s1", "cust", 1000, "EUR", timeouts=Timeouts(never_opened_s=30, open_too_long_s=120))
    effects = []
    for now, kind, *detail in events:
        s, eff = step(s, Event(kind, *detail), now)
        effects += [e.kind + (":" + e.detail if e.detail else "") for e in eff]
    return s, effects


def test_happy_path_effects_in_order():
    s, eff = run([(0, "start"), (1, "before_captured"), (2, "unlocked"), (5, "door_opened"),
                  (20, "door_closed"), (22, "after_ready"), (22.1, "decided", "charge")])
    assert s.state == "charged" and s.final
    assert eff == ["capture_before", "unlock", "lock", "settle_and_capture_after", "decide", "finish:charged"]


def test_door_never_opened_voids_and_relocks():
    s, eff = run([(0, "start"), (1, "before_captured"), (2, "unlocked"), (20, "tick"), (33, "tick")])
    assert s.state == "void" and s.outcome == "door_never_opened"
    assert eff[-2:] == ["lock", "finish:void"]


def test_door_open_too_long_alarms_once_and_continues():
    s, eff = run([(0, "start"), (1, "before_captured"), (2, "unlocked"), (3, "door_opened"),
                  (200, "tick"), (300, "tick"), (301, "door_closed")])
    assert eff.count("alarm:door_open_too_long") == 1
    assert s.state == "closed"


def test_failure_before_open_voids_after_open_reviews():
    s, _ = run([(0, "start"), (1, "failed", "camera_down")])
    assert s.state == "void"
    s, eff = run([(0, "start"), (1, "before_captured"), (2, "door_opened"), (3, "failed", "scale_offline")])
    assert s.state == "needs_review" and eff[-1] == "finish:needs_review"


def test_out_of_order_and_final_events_change_nothing():
    s0 = Session("s1", "c", None, "EUR")
    s, eff = step(s0, Event("door_closed"), 1.0)
    assert s == s0 and eff == []
    s, _ = run([(0, "start"), (1, "before_captured"), (2, "door_opened"), (3, "door_closed"),
                (4, "after_ready"), (5, "decided", "nothing_taken")])
    assert s.state == "void"
    assert step(s, Event("door_opened"), 9.0) == (s, [])
