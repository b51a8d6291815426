import type { NewProduct } from "./store.js";

type DemoItem = [name: string, price: string, description: string];

// Hand-written demo data for `make up`: six categories, ten products each.
const categories: Record<string, DemoItem[]> = {
  coffee: [
    [
      "Ethiopia Yirgacheffe Beans",
      "16.50",
      "Washed heirloom beans with notes of jasmine, lemon and black tea. 340 g.",
    ],
    [
      "Colombia Huila Beans",
      "14.00",
      "Balanced medium roast: caramel, red apple, milk chocolate. 340 g.",
    ],
    ["Sumatra Mandheling Beans", "15.25", "Earthy dark roast with cedar and dark cocoa. 340 g."],
    [
      "Espresso House Blend",
      "13.75",
      "Brazil and Guatemala blend built for espresso with milk. 1 kg.",
    ],
    [
      "Decaf Swiss Water Beans",
      "15.00",
      "Chemical-free decaf from Peru; cocoa and hazelnut. 340 g.",
    ],
    ["Kenya AA Beans", "18.90", "Bright blackcurrant and grapefruit, juicy body. 250 g."],
    ["Guatemala Antigua Beans", "14.80", "Smoky chocolate and spice from volcanic soil. 340 g."],
    ["Cold Brew Coarse Grind", "12.40", "Pre-ground coarse for 12-hour cold brew. 500 g."],
    ["Costa Rica Honey Process", "17.30", "Honey-processed; brown sugar and stone fruit. 250 g."],
    ["Single Origin Sampler", "29.00", "Four 100 g bags from four continents."],
  ],
  tea: [
    ["Darjeeling First Flush", "12.00", "Muscatel spring tea from the Himalayan foothills. 100 g."],
    ["Sencha Green Tea", "9.50", "Steamed Japanese green tea, grassy and sweet. 100 g."],
    ["Earl Grey Loose Leaf", "8.75", "Ceylon black tea with bergamot oil. 125 g."],
    ["Jasmine Pearls", "14.20", "Hand-rolled green tea scented with jasmine blossoms. 50 g."],
    ["Rooibos Vanilla", "7.90", "Caffeine-free South African red bush with vanilla. 100 g."],
    ["Oolong Tie Guan Yin", "13.60", "Floral, lightly oxidised Fujian oolong. 75 g."],
    ["Matcha Ceremonial Grade", "24.00", "Stone-ground Uji matcha for whisking. 30 g."],
    ["English Breakfast", "6.95", "Strong Assam blend that takes milk well. 40 bags."],
    ["Chamomile Flowers", "7.25", "Whole Egyptian chamomile blossoms. 50 g."],
    ["Pu-erh Aged Cake", "32.00", "Ripe pu-erh pressed in 2018. 357 g cake."],
  ],
  brewing: [
    ["Pour-Over Dripper", "22.00", "Ceramic cone dripper with spiral ribs, size 02."],
    ["Gooseneck Kettle", "54.00", "Temperature-controlled electric kettle, 0.9 l."],
    ["Burr Grinder", "129.00", "Conical steel burrs, 40 grind settings."],
    ["French Press 8 Cup", "34.50", "Borosilicate glass with a steel double filter."],
    ["Digital Coffee Scale", "39.90", "0.1 g resolution with a built-in shot timer."],
    ["Paper Filters 100", "5.50", "Unbleached filters for 02 drippers."],
    ["Moka Pot 6 Cup", "31.00", "Aluminium stovetop espresso maker."],
    ["Aeropress Style Brewer", "36.00", "Immersion-and-pressure brewer for one cup."],
    ["Cold Brew Jar", "27.00", "1.5 l jar with a fine mesh insert."],
    ["Milk Frother", "19.95", "Handheld whisk for foam in seconds."],
  ],
  books: [
    ["The Coffee Atlas", "35.00", "Origins, farms and flavours of the coffee world."],
    ["Tea: A Field Guide", "28.00", "How tea is grown, processed and brewed."],
    ["Home Barista Handbook", "24.50", "Dial in espresso at home, step by step."],
    ["Roasting at Home", "21.00", "Small-batch roasting with simple tools."],
    ["The Tea Ceremony", "19.00", "History and practice of chanoyu."],
    ["Latte Art Basics", "16.00", "Hearts, tulips and rosettas explained."],
    ["Water for Coffee", "29.90", "The chemistry of brewing water."],
    ["Cafe Design", "45.00", "Thirty small cafes and how they were built."],
    ["A Year of Infusions", "18.50", "A recipe for every week."],
    ["Sensory Notes Journal", "12.00", "A tasting log with flavour wheels."],
  ],
  cups: [
    ["Double-Wall Glass 250 ml", "18.00", "Keeps coffee hot and hands cool. Set of two."],
    ["Stoneware Mug", "15.50", "Hand-glazed 350 ml mug, dishwasher safe."],
    ["Espresso Cups Set", "26.00", "Four 80 ml porcelain cups with saucers."],
    ["Travel Tumbler", "29.00", "Vacuum-insulated 470 ml tumbler with a leak-proof lid."],
    ["Tea Cup and Saucer", "21.00", "Bone china, 200 ml."],
    ["Cupping Bowl", "9.00", "Standard 200 ml bowl for tasting coffee."],
    ["Latte Bowl", "17.00", "Wide 400 ml bowl for cafe au lait."],
    ["Yunomi Tea Cup", "14.00", "Tall handle-less Japanese cup."],
    ["Cortado Glass", "11.00", "135 ml tempered glass."],
    ["Thermal Carafe", "44.00", "1 l steel carafe that keeps heat for hours."],
  ],
  snacks: [
    ["Almond Biscotti", "7.50", "Twice-baked Tuscan biscuits. 200 g."],
    ["Dark Chocolate 70%", "4.90", "Single-origin Peru bar. 80 g."],
    ["Shortbread Tin", "11.00", "Butter shortbread fingers. 300 g."],
    ["Matcha Cookies", "8.20", "Crisp cookies with ceremonial matcha. 150 g."],
    ["Stroopwafels", "6.40", "Caramel-filled waffles that sit on a cup. 8 pieces."],
    ["Candied Orange Peel", "9.30", "Dipped in dark chocolate. 150 g."],
    ["Cantuccini Mix", "8.80", "Almond, pistachio and chocolate. 250 g."],
    ["Honey Madeleines", "7.10", "Soft French sponge cakes. 12 pieces."],
    ["Coffee Toffee", "5.60", "Brittle toffee with ground espresso. 120 g."],
    ["Ginger Snaps", "4.50", "Spiced crunchy biscuits. 200 g."],
  ],
};

/** The demo catalog: 60 products in 6 categories, priced in USD; ids are assigned by the seeder. */
export function demoCatalog(): Omit<NewProduct, "id">[] {
  return Object.entries(categories).flatMap(([category, items]) =>
    items.map(([name, price, description], index) => {
      const [units = "0", cents = "0"] = price.split(".");
      return {
        sku: `${category.slice(0, 3).toUpperCase()}-${String(index + 1).padStart(3, "0")}`,
        name,
        description,
        category,
        image_url: "",
        price_currency: "USD",
        price_units: BigInt(units),
        price_nanos: Number(cents.padEnd(2, "0")) * 10_000_000,
      };
    }),
  );
}
