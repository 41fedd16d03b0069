"""Hand-written English word lists for the synthetic sentence grammar (our own text, no licence strings).

Nouns are grouped by meaning so that verbs take sensible objects; every word is in the CMU
Pronouncing Dictionary (checked by the tests), so labels never depend on the neural G2P.
Nouns are ``singular:plural``; verbs are ``base 3sg past ing participle`` followed by the
object classes they accept (F food, T thing, P person, L place, A animal, X topic, R readable,
M media, - intransitive).
"""

from __future__ import annotations


def _nouns(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split():
        sing, _, plural = item.partition(":")
        out.append((sing, plural or sing + "s"))
    return out


NOUNS: dict[str, list[tuple[str, str]]] = {
    "F": _nouns("""apple bread:bread cake cheese:cheese chicken:chicken coffee:coffee soup:soup pizza:pizza
        sandwich:sandwiches egg rice:rice pie salad milk:milk tea:tea juice:juice cookie potato:potatoes
        tomato:tomatoes orange banana steak fish:fish butter:butter pasta:pasta burger candy:candy
        dinner lunch:lunches breakfast:breakfast meal water:water carrot peach:peaches pear cereal:cereal"""),
    "T": _nouns("""book car phone table chair box:boxes bag key letter picture shirt hat ball clock lamp door
        window bottle cup glass:glasses knife:knives pen paper radio computer bike boat truck coat shoe
        ring map card gift ticket camera bed desk toy rope basket bucket brush:brushes blanket pillow plate
        spoon watch:watches wallet jacket sweater bench:benches fence stone tool wheel towel mirror"""),
    "P": _nouns("""man:men woman:women boy girl friend teacher doctor nurse neighbor brother sister mother
        father kid child:children baby:babies driver farmer lawyer student worker officer cousin uncle
        aunt son daughter wife:wives husband boss:bosses player writer cook pilot coach:coaches"""),
    "L": _nouns("""store school park house church:churches office hospital beach:beaches city:cities town
        river lake farm garden kitchen library:libraries station airport restaurant bank market street
        road field hill mountain forest island village yard garage hotel museum theater gym"""),
    "A": _nouns("""dog cat horse bird cow pig duck mouse:mice rabbit sheep:sheep goat bear fox:foxes wolf:wolves
        deer:deer snake frog bee puppy:puppies kitten"""),
    "X": _nouns("""idea plan job problem question story:stories game movie show song music:music news:news
        weather:weather money:money time family:families team party:parties trip meeting class:classes
        program business:businesses price rule law system report decision project season election
        economy:economies budget policy:policies community:communities government issue vote health:health
        change market war peace:peace future"""),
    "R": _nouns("""book letter story:stories note newspaper report magazine article poem message email menu
        sign"""),
    "M": _nouns("""song movie show game video album concert picture play"""),
}

VERBS: list[tuple[str, str, str, str, str, str]] = [
    tuple(line.split()) for line in """
    eat eats ate eating eaten F
    cook cooks cooked cooking cooked F
    buy buys bought buying bought FT
    sell sells sold selling sold TL
    find finds found finding found TAP
    lose loses lost losing lost T
    bring brings brought bringing brought FT
    take takes took taking taken T
    carry carries carried carrying carried T
    fix fixes fixed fixing fixed T
    break breaks broke breaking broken T
    open opens opened opening opened T
    clean cleans cleaned cleaning cleaned TL
    paint paints painted painting painted TL
    build builds built building built TL
    visit visits visited visiting visited LP
    leave leaves left leaving left L-
    see sees saw seeing seen TAPLM
    watch watches watched watching watched AM
    meet meets met meeting met P
    call calls called calling called P
    help helps helped helping helped P-
    ask asks asked asking asked P
    teach teaches taught teaching taught P
    like likes liked liking liked FTPLAXM
    love loves loved loving loved FPLAM
    hate hates hated hating hated FXM
    need needs needed needing needed FT
    want wants wanted wanting wanted FT
    feed feeds fed feeding fed A
    chase chases chased chasing chased A
    hear hears heard hearing heard XM
    read reads read reading read R-
    write writes wrote writing written R-
    send sends sent sending sent R
    miss misses missed missing missed PL
    remember remembers remembered remembering remembered PLX
    forget forgets forgot forgetting forgotten T
    finish finishes finished finishing finished FX
    start starts started starting started X-
    change changes changed changing changed X
    discuss discusses discussed discussing discussed X
    support supports supported supporting supported XP
    drive drives drove driving driven T-
    wash washes washed washing washed TA
    keep keeps kept keeping kept TA
    move moves moved moving moved T-
    hold holds held holding held TA
    drop drops dropped dropping dropped T
    throw throws threw throwing thrown T
    catch catches caught catching caught A
    enjoy enjoys enjoyed enjoying enjoyed FMX
    share shares shared sharing shared FT
    order orders ordered ordering ordered F
    sleep sleeps slept sleeping slept -
    run runs ran running run -
    walk walks walked walking walked -
    laugh laughs laughed laughing laughed -
    work works worked working worked -
    wait waits waited waiting waited -
    talk talks talked talking talked -
    sing sings sang singing sung -
    swim swims swam swimming swum -
    dance dances danced dancing danced -
    smile smiles smiled smiling smiled -
    rest rests rested resting rested -
    travel travels traveled traveling traveled -
    win wins won winning won -
    stay stays stayed staying stayed -
    study studies studied studying studied -
    play plays played playing played M-
    """.strip().splitlines()
]  # fmt: skip

ADJECTIVES = """good bad big small old new young little long short hot cold warm cool dark bright red blue
    green black white brown yellow happy sad busy easy hard nice great clean dirty quiet loud strong weak
    soft heavy light cheap fresh sweet funny strange simple large full empty wet dry fast slow rich poor
    pretty real""".split()
EVAL_ADJECTIVES = """good great nice fun hard easy interesting important different expensive cheap
    crazy terrible wonderful awful funny boring strange fine amazing scary""".split()
PERSON_ADJECTIVES = "happy sad tired busy sick hungry angry nervous ready late excited worried".split()
DEGREE = "very really pretty so too kind of".split(" ")
PREPOSITIONS = "in on under near behind beside into over across through by from".split()
PLACE_PREPS = "in at near behind beside".split()
TIME_PAST = ["yesterday", "last night", "last week", "last year", "this morning", "a while ago",
             "on sunday", "two days ago", "last summer", "after dinner"]
TIME_FUTURE = ["tomorrow", "next week", "next year", "tonight", "this weekend", "later today",
               "on monday", "after lunch", "next month", "soon"]
TIME_HABIT = ["every day", "on weekends", "in the morning", "at night", "all the time", "every week",
              "after work", "in the summer", "most days", "once a month"]
FREQ_ADVERBS = "always never usually sometimes often rarely".split()
SUBJECT_PL = ["i", "you", "we", "they", "my kids", "my parents", "our friends", "the kids", "most people",
              "a lot of people"]
SUBJECT_SG = ["he", "she", "my wife", "my husband", "my son", "my daughter", "my brother", "my sister",
              "my friend", "the teacher", "our neighbor", "the doctor", "my boss", "my mother"]
FILLERS = ["well", "yeah", "oh", "so", "um", "you know", "i mean", "actually", "okay", "uh"]
NUMBERS = ("two three four five six seven eight nine ten twelve twenty thirty forty fifty hundred "
           "thousands").split()
ORGS = ["company", "city", "state", "government", "school board", "team", "group", "council", "agency",
        "department", "university", "hospital", "committee"]
NAMES = "john mary david sarah mike linda paul susan james karen tom anna".split()

#: Our own fixed 50-word vocabulary for the "50-Word" blocks (a small AAC-style set).
FIFTY_WORDS: tuple[str, ...] = tuple("""i you we my am are is not do want need like feel have get
    go come see call help please thank yes no okay hello goodbye now later today very too more some water
    food bed home doctor phone wife son cold hot tired happy sore better good bad""".split())
assert len(FIFTY_WORDS) == 50 and len(set(FIFTY_WORDS)) == 50
