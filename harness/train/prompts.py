"""Write the bundled instruction sets `datasets/zoo-prompts/{train,eval}.jsonl` (Spec-Bench question format).

Prompts are built from templates x fill-ins written for this project. Every pool of fill-ins (topics,
tasks, sentences, ...) is split once: every 6th item is reserved for the eval set, so eval prompts
ask about things no training prompt mentions. The output is deterministic:

    python -m harness.train.prompts            # rewrite both files
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from harness import PROJECT_ROOT

OUT_DIR = PROJECT_ROOT / "datasets" / "zoo-prompts"
N_TRAIN = 1600  # prompts in the bundled train.jsonl

# --- fill-ins -------------------------------------------------------------------------------------

TOPICS = """photosynthesis; black holes; the water cycle; climate change; the French Revolution; the Roman Empire;
machine learning; the internet; vaccines; volcanoes; earthquakes; the stock market; inflation; democracy;
the human heart; DNA; electricity; magnets; the moon landing; renewable energy; solar panels; wind turbines;
coral reefs; rainforests; the immune system; the printing press; the industrial revolution; bees; honey;
coffee; tea; chocolate; the Olympic Games; jazz music; the Renaissance; ancient Egypt; the pyramids;
the Great Wall of China; gravity; the speed of light; plate tectonics; recycling; composting; blockchain;
cryptography; the periodic table; chemical reactions; the human brain; sleep; dreams; meditation;
nutrition; vitamins; exercise; marathon running; chess; the theory of evolution; dinosaurs; fossils;
the solar system; Mars; comets; rainbows; thunderstorms; hurricanes; glaciers; deserts; the ocean tides;
supply and demand; taxes; interest rates; credit cards; budgeting; remote work; social media;
smartphones; electric cars; airplanes; trains; bridges; skyscrapers; 3D printing; robots; artificial
intelligence; quantum computing; antibiotics; the flu; hand washing; the Silk Road; the Vikings;
Shakespeare; the novel; poetry; photography; painting; sculpture; architecture; gardening; bread baking;
fermentation; cheese making; the metric system; time zones; calendars; maps; compasses; lighthouses;
the postal service; libraries; museums; public transport; bicycles; urban planning; pollution; plastic
waste; clean water; the Amazon river; the Himalayas; the Sahara; Antarctica; penguins; whales; wolves;
elephants; octopuses; migration of birds; butterflies; mushrooms; trees; seeds; soil; the nitrogen cycle;
sound waves; music theory; the piano; the guitar; languages; grammar; writing systems; the alphabet;
mathematics; prime numbers; probability; statistics; geometry; fractions; algebra; computers; operating
systems; databases; encryption; passwords; email; search engines; video games; cinema; television;
radio; newspapers; elections; human rights; the United Nations; teamwork; leadership; time management;
public speaking; job interviews; friendship; kindness; volunteering; camping; hiking; swimming; yoga""".split(";")

WRITING_SUBJECTS = """the first day of spring; a rainy afternoon; an old lighthouse; a lost cat finding its way home;
the city at night; a grandmother's kitchen; a friendship between a robot and a bird; the ocean; autumn leaves;
a train journey; a snowy mountain; a busy market; the last day of school; a forgotten library; a garden at dawn;
a storm at sea; a child's first bicycle; the stars; a quiet village; a dragon who is afraid of fire;
a time traveler visiting a museum; a small bakery; moving to a new city; a message in a bottle; a broken clock;
a lonely astronaut; a festival of lights; an unexpected letter; a river; the moon; coffee in the morning;
a detective and a missing painting; a mountain village; a picnic; a lighthouse keeper; a summer thunderstorm;
an old photograph; a walk in the forest; a kite; a street musician; a puppy's first snow""".split(";")

RECIPIENTS = """my manager; a new colleague; my landlord; a customer; my teacher; the school principal; a friend;
my neighbor; the city council; a hotel manager; a job applicant; a team of volunteers; my professor;
the support team of an online shop; a book club; my grandparents""".split(";")

EMAIL_SUBJECTS = """asking for a day off; a delayed delivery; a broken heating system; a project update;
thanking them for their help; inviting them to a party; rescheduling a meeting; a complaint about noise;
a request for a reference letter; welcoming them to the team; a refund request; a fundraising event;
feedback on a presentation; a change of address; apologizing for a mistake; a lost package""".split(";")

PRODUCTS = """a reusable water bottle; a pair of running shoes; a solar-powered lamp; a smart watch; a wooden chess set;
noise-cancelling headphones; a backpack for hikers; a coffee grinder; a plant-based protein bar; a desk lamp;
an electric toothbrush; a travel pillow; a board game for families; a weather station; a yoga mat;
a bread maker; a children's picture book; a portable charger""".split(";")

CODE_TASKS = """checks whether a number is prime; reverses a string; returns the factorial of n; counts the vowels in a string;
finds the largest element in a list; removes duplicates from a list while keeping order; checks whether a word is a
palindrome; computes the n-th Fibonacci number; sorts a list of dictionaries by a key; merges two sorted lists;
counts word frequencies in a text; converts Celsius to Fahrenheit; computes the average of a list of numbers;
flattens a nested list; finds the greatest common divisor of two numbers; checks whether two strings are anagrams;
returns the second largest number in a list; reads a CSV file and prints each row; implements binary search;
implements bubble sort; capitalizes the first letter of every word; validates an email address with a regular
expression; converts a decimal number to binary; finds all even numbers in a list; computes the sum of digits of
an integer; returns the longest word in a sentence; rotates a list by k positions; checks whether a year is a leap
year; counts the lines in a text file; generates a random password; transposes a matrix; finds the intersection of
two lists; implements a stack class with push and pop; implements a simple queue; computes the median of a list;
checks whether brackets in a string are balanced; converts a Roman numeral to an integer; returns the first
non-repeating character in a string; chunks a list into pieces of size n; computes compound interest""".split(";")

LANGUAGES = ["Python", "JavaScript", "C", "Java", "Rust", "Go", "Bash", "SQL"]

SENTENCES = """The weather is nice today, so we are going for a walk in the park.; I would like to order a cup of
coffee and a piece of cake.; Where is the nearest train station?; My brother is studying medicine at the
university.; We have been waiting for the bus for twenty minutes.; Please close the window because it is cold.;
The museum is closed on Mondays.; She plays the violin every evening after dinner.; Can you help me carry
these boxes?; The children are playing football in the garden.; I forgot my umbrella at the office.; This book
is more interesting than the film.; We are planning a trip to the mountains next summer.; The meeting starts at
nine o'clock tomorrow morning.; He cooked a delicious soup for his friends.; The shop sells fresh bread every
morning.; Our flight was cancelled because of the storm.; I am learning to cook Italian food.""".split(";")

TARGET_LANGS = ["French", "Spanish", "German", "Italian", "Portuguese", "Dutch"]

PEOPLE = """Maria; Tom; Aisha; Mr. Chen; Lucas; Priya; Olga; Kenji; Fatima; Diego; Emma; Noah; Zara; Ivan;
Grace; Omar; Lena; Samuel; Mei; Ahmed; Sofia; Daniel; Amara; Hugo""".split(";")

PLACES = """Paris; Tokyo; Cairo; Lima; Oslo; Nairobi; Toronto; Madrid; Sydney; Seoul; Mumbai; Berlin; Lisbon;
Santiago; Dublin; Hanoi; Vienna; Accra""".split(";")

ACTIVITIES = """sleeping better; studying for exams; saving money; learning a new language; staying focused at
work; eating healthier; starting to run; reducing stress; making new friends in a new city; keeping a plant
alive; writing a good essay; preparing for a job interview; traveling on a budget; organizing a small kitchen;
getting up early; drinking more water; reading more books; keeping a journal; learning to play the guitar;
taking better photos with a phone; reducing screen time; hosting a dinner party; training a puppy; staying
warm in winter; planning a wedding on a budget; cleaning a messy room""".split(";")

ROLES = """a tour guide in Rome; a chef in a busy restaurant; a pirate captain; a medieval knight; a museum guide;
a friendly librarian; a detective; an astronaut on the space station; a personal fitness trainer; a career
coach; a gardener; a history teacher; a travel agent; a barista; a park ranger; a ship's navigator""".split(";")

ROLE_QUESTIONS = """introduce yourself and describe a typical day; give advice to a beginner; describe the most
memorable moment of your career; explain what you love about your job; describe the challenges you face;
welcome a group of visitors""".split(";")

REVIEWS = """The food was cold and the waiter ignored us for half an hour.; I loved this phone, the battery lasts all
day and the camera is great.; The hotel room was clean, quiet and the staff were very friendly.; The movie was
far too long and the ending made no sense.; Great value for money, I would buy it again.; The package arrived
broken and customer service never answered.; A cozy little cafe with the best croissants in town.; The
instructions were confusing and it took me hours to assemble the table.; Fast delivery and excellent
quality.; The concert was loud, crowded and overpriced.; My kids enjoyed every minute of the show.; The app
crashes every time I try to log in.""".split(";")

PLAIN_SENTENCES = """hey can u send me the report by tomorrow thx; the meeting got moved cause the boss is sick;
we gonna need more chairs for the party; i think the new design looks kinda bad; this software is super
slow and annoying; the kids was playing outside all day; me and him went to the store yesterday; your
invoice is late and we want the money now""".split(";")

NONSENSE = ["bloops", "razzies", "lazzies", "wugs", "florps", "glims", "zorbs", "tavs", "quibs", "snarfs",
            "plinks", "mervs", "drumbles", "yints", "kelps", "vorns", "trels", "gniffs"]

FOLLOW_UPS = ["Can you make it shorter?", "Now explain it to a five-year-old.", "Can you give me an example?",
              "Summarize your answer in one sentence.", "Can you make it more formal?", "Why is that?",
              "Can you add one more point?", "Now write it as a bulleted list."]

# --- templates ------------------------------------------------------------------------------------


def pick(rng: random.Random, pools: dict, name: str) -> str:
    return rng.choice(pools[name]).strip()


def passage(rng, pools) -> str:
    """A short text to summarize or extract from: sentences about a place and people, written here."""
    p, q, r = rng.sample(pools["people"], 3)
    city, topic, act = pick(rng, pools, "places"), pick(rng, pools, "topics"), pick(rng, pools, "activities")
    n = rng.randint(2, 40)
    return (f"{p.strip()} moved to {city} {n} years ago to work as a teacher. At first {p.strip()} found the city noisy "
            f"and expensive, but after meeting {q.strip()} at a community class about {topic}, life became easier. "
            f"Together they started a weekly club for people interested in {act}. The club now has more than "
            f"{n * 7} members, and {r.strip()} helps organize events every month. Last year the club won a local award "
            f"for bringing neighbors together.")


def make_prompt(rng: random.Random, pools: dict) -> tuple[str, str]:
    """(category, instruction) for one random prompt."""
    cat = rng.choice(["qa", "qa", "stem", "writing", "writing", "math", "math", "code", "code", "summarization",
                      "extraction", "reasoning", "translation", "chat", "chat", "roleplay", "rewrite"])
    t = lambda name: pick(rng, pools, name)  # noqa: E731
    if cat == "qa":
        return cat, rng.choice([
            f"What is {t('topics')}?", f"Explain {t('topics')} in simple terms.", f"Why is {t('topics')} important?",
            f"Give me three interesting facts about {t('topics')}.", f"Describe the history of {t('topics')} briefly.",
            f"What are the advantages and disadvantages of {t('topics')}?",
            f"Write a short paragraph about {t('topics')} for a school newsletter.",
            f"What is the difference between {t('topics')} and {t('topics')}?",
            f"What are some common misconceptions about {t('topics')}?"])
    if cat == "stem":
        return cat, rng.choice([
            f"How does {t('topics')} work? Explain step by step.", f"Explain {t('topics')} to a high school student.",
            f"What would happen to the world without {t('topics')}?", f"List five key terms related to {t('topics')} "
            f"and define each one.", f"How do scientists study {t('topics')}?"])
    if cat == "writing":
        return cat, rng.choice([
            f"Write a short poem about {t('subjects')}.", f"Write a haiku about {t('subjects')}.",
            f"Write a short story about {t('subjects')}.", f"Write the opening paragraph of a novel about {t('subjects')}.",
            f"Write an email to {t('recipients')} about {t('email')}.",
            f"Write a short, friendly message to {t('recipients')} about {t('email')}.",
            f"Write a product description for {t('products')}.", f"Write a short advertisement for {t('products')}.",
            f"Write a blog post introduction about {t('activities')}."])
    if cat == "math":
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(100, 999)
        return cat, rng.choice([
            f"What is {a} times {b}? Show your work.", f"Solve for x: {a}x + {b} = {c}.",
            f"A train travels {c} km in {rng.randint(2, 9)} hours. What is its average speed?",
            f"A shirt costs ${c // 10} and is on sale for {rng.choice([10, 15, 20, 25, 30, 40, 50])}% off. What is the sale price?",
            f"What is {rng.choice([5, 10, 12, 15, 20, 25, 30, 75])}% of {c}?",
            f"Find the area and the perimeter of a rectangle that is {a} cm long and {b} cm wide.",
            f"{t('people')} has {c} apples and gives {a} to each of {rng.randint(2, 9)} friends. How many apples are left?",
            f"If {t('people')} saves ${a} every week, how much will be saved after {b} weeks?",
            f"What is the sum of all integers from 1 to {c}?", f"Is {c} a prime number? Explain.",
            f"Simplify the fraction {a * 6}/{b * 6}.", f"Convert {c} minutes into hours and minutes.",
            f"A recipe needs {rng.randint(2, 5)} eggs for {rng.randint(2, 6)} people. How many eggs are needed for {b} people?"])
    if cat == "code":
        task, lang = t("code"), rng.choice(LANGUAGES[:4])
        return cat, rng.choice([
            f"Write a Python function that {task}.", f"Write a {lang} function that {task}.",
            f"Write a Python function that {task}, and add a docstring and an example.",
            f"How would you write a program that {task}? Explain the idea and give Python code.",
            f"Write unit tests for a Python function that {task}."])
    if cat == "summarization":
        return cat, rng.choice(["Summarize in two sentences: ", "Summarize the following text: ",
                                "Give a one-sentence summary of this text: ", "What is the main idea of this text? "]
                               ) + passage(rng, pools)
    if cat == "extraction":
        return cat, rng.choice(["List the names of all the people in this text: ", "Which cities are mentioned in "
                                "this text? ", "Extract all the numbers from this text: ",
                                "Write three questions that can be answered from this text: "]) + passage(rng, pools)
    if cat == "reasoning":
        x, y, z = rng.sample(NONSENSE, 3)
        p, q, r = (s.strip() for s in rng.sample(pools["people"], 3))
        a = rng.randint(1, 50)
        return cat, rng.choice([
            f"If all {x} are {y} and all {y} are {z}, are all {x} {z}? Answer and explain.",
            f"{p} is taller than {q}, and {q} is taller than {r}. Who is the shortest? Explain your reasoning.",
            f"{p} is older than {q}. {r} is younger than {q}. Who is the oldest?",
            f"What comes next in the sequence {a}, {a + 3}, {a + 6}, {a + 9}? Explain.",
            f"If it takes {rng.randint(2, 9)} workers {rng.randint(2, 9)} days to build a wall, how long would it take "
            f"twice as many workers? Explain.",
            f"{p} has twice as many books as {q}, and together they have {3 * rng.randint(5, 40)} books. How many does each have?"])
    if cat == "translation":
        return cat, f"Translate into {rng.choice(TARGET_LANGS)}: {t('sentences')}"
    if cat == "chat":
        return cat, rng.choice([
            f"Give me three tips for {t('activities')}.", f"How can I get better at {t('activities')}?",
            f"What are the most common mistakes people make when {t('activities')}?",
            f"I want to start {t('activities')}. Where should I begin?",
            f"Can you make a one-week plan for {t('activities')}?",
            f"What should I pack for a weekend trip to {t('places')}?",
            f"What are some fun things to do in {t('places')}?"])
    if cat == "roleplay":
        return cat, f"Pretend you are {t('roles')}. Please {t('role_q')}."
    return cat, rng.choice([f"Rewrite this sentence to be more formal: {t('plain')}",
                            f"Correct the grammar of this sentence: {t('plain')}",
                            f"Is the following review positive or negative? Explain. \"{t('reviews')}\"",
                            f"Rewrite this review in a more polite way: \"{t('reviews')}\""])


def split_pools(eval_split: bool) -> dict:
    pools = dict(topics=TOPICS, subjects=WRITING_SUBJECTS, recipients=RECIPIENTS, email=EMAIL_SUBJECTS,
                 products=PRODUCTS, code=CODE_TASKS, sentences=SENTENCES, people=PEOPLE, places=PLACES,
                 activities=ACTIVITIES, roles=ROLES, role_q=ROLE_QUESTIONS, reviews=REVIEWS, plain=PLAIN_SENTENCES)
    # Every 6th item of each pool belongs to the eval split only.
    return {k: [" ".join(s.split()) for i, s in enumerate(v) if (i % 6 == 3) == eval_split] for k, v in pools.items()}


def build(n: int, eval_split: bool, seed: int, prefix: str, two_turn: float = 0.1) -> list[dict]:
    rng, pools, rows, seen = random.Random(seed), split_pools(eval_split), [], set()
    while len(rows) < n:
        cat, text = make_prompt(rng, pools)
        if text in seen:
            continue
        seen.add(text)
        turns = [text] + ([rng.choice(FOLLOW_UPS)] if rng.random() < two_turn else [])
        rows.append(dict(question_id=f"{prefix}-{len(rows):04d}", category=cat, turns=turns))
    return rows


def train_file(n: int, folder: Path) -> Path:
    """The bundled train.jsonl for its 1600 prompts; for more, the first n of the same generator (the bundled
    1600 first, unchanged) written once into `folder`, so a bigger training set needs no committed file."""
    if n == N_TRAIN:
        return OUT_DIR / "train.jsonl"
    path = folder / f"train-{n}.jsonl"
    if not path.exists():
        write_jsonl(build(n, False, seed=1, prefix="train"), path)
    return path


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")  # renamed into place: an interrupted write never leaves a short file
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.rename(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=N_TRAIN)
    ap.add_argument("--n-eval", type=int, default=40)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    train = build(args.n_train, False, seed=1, prefix="train")
    evals = build(args.n_eval, True, seed=2, prefix="eval", two_turn=0.0)
    assert not {r["turns"][0] for r in train} & {r["turns"][0] for r in evals}
    write_jsonl(train, args.out / "train.jsonl")
    write_jsonl(evals, args.out / "eval.jsonl")
    print(f"wrote {len(train)} train and {len(evals)} eval prompts to {args.out}")


if __name__ == "__main__":
    main()
